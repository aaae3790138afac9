"""damoxing (大模型): a workbench for the whole life of a deep-learning model.

    run = damoxing.train("config.yaml", train__epochs=5)
    run.metrics["test"]["accuracy"]
    model = damoxing.load(run.path)
    model.predict(frame_or_array)

Heavy libraries (torch, pandas) are imported only when a function needs them.
"""

from damoxing.core.version import __version__

__all__ = ["train", "load", "evaluate", "predict", "generate", "compare", "ladder", "explain", "audit", "export", "compress", "tune", "__version__"]


def __getattr__(name):
    if name in ("train", "load", "evaluate", "predict", "generate", "compare", "ladder", "explain", "audit", "export", "Run", "Predictor",
                "Comparison", "Ladder", "ExportReport", "compress", "Compressed", "tune"):
        from damoxing import api

        return getattr(api, name)
    raise AttributeError(f"module 'damoxing' has no attribute {name!r}")
