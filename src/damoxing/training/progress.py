"""Progress a log can show: one plain line per epoch when stderr is not a terminal.

On a terminal the rich bar (core/console.progress_bar) shows the steps; in a log file, CI job or
scheduler it would print nothing until the run ends, so each finished epoch prints its number, its
losses and validation metrics, the monitored metric with the best so far, its seconds and an
estimate of the time left (the epoch budget at this pace: early stopping may end sooner). An
epoch longer than DURING_EPOCH_SECONDS (a pretrained encoder, a large table) also prints a line
about that often while it runs, so a log never sits silent for minutes.
"""

from __future__ import annotations

import sys
import time

from damoxing.core.console import log_lines

DURING_EPOCH_SECONDS = 30.0


def duration(seconds: float) -> str:
    """83.2 -> '1m23s'; 4000 -> '1h06m'; 2.5 -> '2.5s'; 0.042 -> '0.04s'."""
    if seconds < 1:
        return f"{seconds:.2f}s"
    if seconds < 10:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


def epoch_line(record: dict, epochs: int, monitor: str, best: float | None, best_epoch: int, eta_seconds: float) -> str:
    """'epoch 3/20 train_loss 0.4123 val_loss 0.3981 val_accuracy 0.9120 | val_loss best 0.3981 (epoch 3) | 0.8s, eta 13.6s'."""
    values = " ".join(f"{k} {v:.4f}" for k, v in record.items() if k.startswith(("train_", "val_")) and isinstance(v, float))
    text = f"epoch {record['epoch']}/{epochs} {values}"
    if best is not None:
        text += f" | {monitor} best {best:.4f} (epoch {best_epoch})"
    left = epochs - record["epoch"]
    return text + f" | {duration(record['seconds'])}" + (f", eta {duration(eta_seconds)}" if left > 0 else "")


class EpochLog:
    """Prints epoch_line after each epoch when progress goes to a log (log_lines()); silent otherwise."""

    def __init__(self, epochs: int, total_steps: int = 0, interval: float = DURING_EPOCH_SECONDS):
        self.epochs, self.total_steps, self.interval = epochs, total_steps, interval
        self.seconds, self.count = 0.0, 0
        self.enabled = log_lines()
        self.last_line = time.perf_counter()

    def during_epoch(self, step: int, epoch: int, loss: float) -> None:
        """'epoch 1/2 step 120/400 train_loss 0.5312 (running) | 31s since the last line', at most every `interval` seconds."""
        now = time.perf_counter()
        if not self.enabled or now - self.last_line < self.interval:
            return
        print(f"epoch {epoch}/{self.epochs} step {step}/{self.total_steps} train_loss {loss:.4f} (running) "
              f"| {duration(now - self.last_line)} since the last line", file=sys.stderr, flush=True)
        self.last_line = now

    def after_epoch(self, record: dict, monitor: str, best: float | None, best_epoch: int) -> None:
        if not self.enabled:
            return
        self.seconds += record["seconds"]
        self.count += 1
        eta = self.seconds / self.count * (self.epochs - record["epoch"])
        print(epoch_line(record, self.epochs, monitor, best, best_epoch, eta), file=sys.stderr, flush=True)
        self.last_line = time.perf_counter()
