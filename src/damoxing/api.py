"""The Python API: one function per CLI verb, each defined in damoxing/verbs/.

    run = damoxing.train("config.yaml", train__epochs=5)     # verbs/train.py
    damoxing.evaluate(run.path)                               # verbs/evaluate.py
    model = damoxing.load(run.path); model.predict(rows)     # inference/predictor.py
    damoxing.predict(run.path, rows)                          # verbs/predict.py
    damoxing.compare([run_a, run_b])                          # verbs/compare.py -> Comparison
    damoxing.ladder("config.yaml", seeds=3)                   # verbs/ladder.py -> Ladder
    damoxing.explain(run.path)                                # verbs/explain.py: attributions, sanity check, importance
    damoxing.audit(run.path, sensitive="sex", mitigate="equalized_odds")   # verbs/audit.py
    damoxing.export(run.path, format="onnx")                  # verbs/export.py -> ExportReport
    damoxing.compress(run.path, "quantize")                   # verbs/compress.py -> Compressed (a new run)
    damoxing.tune("tune-digits.yaml", trials=20, jobs=2)      # verbs/tune.py -> TuneResult (optuna study)
"""

from __future__ import annotations

from damoxing.deploy.export import ExportReport
from damoxing.inference.predictor import Predictor, load
from damoxing.runs.comparison import Comparison
from damoxing.verbs.audit import AuditResult, audit
from damoxing.verbs.compare import compare
from damoxing.verbs.compress import Compressed, compress
from damoxing.verbs.evaluate import evaluate
from damoxing.verbs.explain import ExplainResult, explain
from damoxing.verbs.export import export
from damoxing.verbs.generate import generate
from damoxing.verbs.ladder import Ladder, ladder
from damoxing.verbs.predict import predict
from damoxing.verbs.serve import app as make_app
from damoxing.verbs.serve import serve
from damoxing.verbs.train import Run, train
from damoxing.verbs.tune import tune

__all__ = ["Run", "Predictor", "Comparison", "Ladder", "train", "evaluate", "load", "predict", "generate", "compare", "ladder",
           "explain", "audit", "ExplainResult", "AuditResult", "export", "ExportReport",
           "compress", "Compressed", "tune", "serve", "make_app"]
