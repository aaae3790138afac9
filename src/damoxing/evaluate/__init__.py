"""Evaluation: metrics (pure functions), baselines, bootstrap intervals, calibration, cost accounting.

`damoxing.evaluate(...)` is the API function while `damoxing.evaluate` is also this subpackage:
once a module in it is imported, Python binds the name `evaluate` on the `damoxing` package to
this module, hiding the function. Making the module callable (forwarding to
`damoxing.api.evaluate`) keeps `damoxing.evaluate(run)` working (the same is done for `train`).
"""

import sys
import types


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from damoxing.api import evaluate

        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
