"""Tasks: what a model is trained to do. One file per task, each registered in TASKS:

    classification.py   regression.py   language_modeling.py   generation.py

The loop asks a task for a batch's loss; evaluation asks it for metrics and the trivial baseline.
"""

from damoxing.tasks import classification, generation, language_modeling, regression  # noqa: F401  (registration)
from damoxing.tasks.base import LOSSES, TASKS, Task
from damoxing.tasks.generation import draw_samples

__all__ = ["TASKS", "LOSSES", "Task", "draw_samples"]
