"""Training: the loop, optimizers and learning-rate schedules, checkpoints, distributed setup.

`damoxing.train(...)` is the API function while `damoxing.train` is also this subpackage: once
`damoxing.train.loop` is imported, Python binds the name `train` on the `damoxing` package to this
module, which would hide the function. Making this module callable (forwarding to
`damoxing.api.train`) keeps `damoxing.train("cfg.yaml")` working however often it is called.
"""

import sys
import types


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from damoxing.api import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
