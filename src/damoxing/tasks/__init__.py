"""Tasks: what a model is trained to do. One file per task, each registered in TASKS:

    classification.py   regression.py   language_modeling.py   generation.py

The loop asks a task for a batch's loss and the per-epoch validation metrics; `evaluate` (at the end
of training and in `damoxing evaluate RUN`) asks it for metrics.json. Each task declares its headline
metric and its validation metrics, so `train.monitor` is checked before any work.
"""

from damoxing.tasks import classification, generation, language_modeling, regression  # noqa: F401  (registration)
from damoxing.tasks.base import (
    LOSSES,
    TASKS,
    EvaluationSettings,
    Task,
    all_monitors,
    check_monitor,
    headline_metric,
    known_task,
    one_split,
)
from damoxing.tasks.generation import draw_samples

__all__ = ["TASKS", "LOSSES", "Task", "EvaluationSettings", "draw_samples", "headline_metric", "check_monitor", "known_task",
           "all_monitors", "one_split"]
