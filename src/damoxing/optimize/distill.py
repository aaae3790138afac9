"""Knowledge distillation (Hinton et al. 2015): a student trained on a teacher's softened outputs.

    classification:  loss = KL(teacher || student) at temperature T x T^2  +  alpha x the task's own loss
    regression:      loss = MSE(student, teacher's predictions)            +  alpha x the task's own loss

(a regressor has no distribution to soften: its student matches the teacher's predictions, in the
student's own target units, and the temperature does not apply).

The teacher's outputs on the training rows are computed once, before training, and travel with the
targets: the training split's y becomes (N, 1 + K) float rows [class id, teacher logits...] (a
regression's (N, 2T) rows [targets..., teacher predictions...]), so
the loop batches and shuffles them with the inputs unchanged (training/loop.py is not touched).
`DistillationLoss` / `RegressionDistillationLoss` is the task the loop trains with; validation and
evaluation use the task itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from damoxing.core.errors import UserError


def check_settings(temperature: float, alpha: float) -> None:
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise UserError(f"--temperature is {temperature}; the softmax temperature must be above 0 (2 to 8 is usual; 1: the plain softmax).")
    if not (isinstance(alpha, (int, float)) and alpha >= 0):
        raise UserError(f"--alpha is {alpha}; the weight of the task loss must be 0 or more (0: learn from the teacher alone).")


def packed_targets(labels: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """(N,) class ids and (N, K) teacher logits -> (N, 1 + K) float32 rows [class id, logits...]."""
    return torch.cat([labels.reshape(-1, 1).float(), teacher_logits.float()], dim=1)


class DistillationLoss:
    """A classification task's stand-in for the training loop: `loss` is the distillation loss on packed
    targets; everything else (validation metrics, names) is the task's own.

    Args:
        task: the student's Classification task.
        temperature: T (> 0); the KL term is multiplied by T^2 so its gradients keep their scale.
        alpha: weight of the task's loss on the true class ids.
    """

    def __init__(self, task, temperature: float, alpha: float):
        self.task, self.temperature, self.alpha = task, float(temperature), float(alpha)

    def __getattr__(self, name: str):
        return getattr(self.task, name)

    def loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """y: (B, 1 + K) [class id, teacher logits]. Returns (loss, student logits (B, K))."""
        outputs = model(x)
        labels, teacher = y[:, 0].long(), y[:, 1:]
        t = self.temperature
        kl = F.kl_div(F.log_softmax(outputs.float() / t, dim=-1), F.log_softmax(teacher.float() / t, dim=-1),
                      log_target=True, reduction="batchmean") * (t * t)
        return kl + self.alpha * self.task.loss_from_outputs(outputs, labels), outputs


def packed_regression_targets(targets: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """(N,) or (N, T) targets and the teacher's predictions in the same units -> (N, 2T) float32 rows."""
    n = targets.shape[0]
    return torch.cat([targets.reshape(n, -1).float(), teacher.reshape(n, -1).float()], dim=1)


class RegressionDistillationLoss:
    """A regression task's stand-in for the training loop: the student matches the teacher's
    predictions (MSE), plus alpha x the task's own loss on the true targets.

    Args:
        task: the student's Regression task.
        alpha: weight of the task's loss on the true targets.
    """

    def __init__(self, task, alpha: float):
        self.task, self.alpha = task, float(alpha)

    def __getattr__(self, name: str):
        return getattr(self.task, name)

    def loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """y: (B, 2T) [targets, teacher predictions]. Returns (loss, student outputs)."""
        outputs = model(x)
        width = y.shape[1] // 2
        targets, teacher = y[:, :width], y[:, width:]
        if width == 1:
            targets, teacher = targets[:, 0], teacher[:, 0]
        matched = F.mse_loss(outputs.reshape(teacher.shape).float(), teacher.float())
        return matched + self.alpha * self.task.loss_from_outputs(outputs, targets), outputs
