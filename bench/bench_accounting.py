"""What the cost accounting itself costs: seed 002's MLP trained with `cost.enabled` on and off.

One process, the same model, data and hyperparameters (64 -> 128 -> 10 on scikit-learn's digits,
SGD lr 0.01 momentum 0.9, batch 64, 10 epochs); on and off runs alternate (and alternate which
goes first) so that a busy machine slows both alike; medians over the repeats. The HTML report
and MLflow are off in both arms: they are not accounting.

Reported:
  training time      FitResult.train_seconds (the loop; the accounting adds nothing inside it)
  training + accounting  train_seconds + the meter's own accounting_seconds (on) vs train_seconds (off)
  end to end         the whole damoxing.train call (data loading, training, evaluation, saving)
  end to end, CPU    the process CPU-seconds of that call: less sensitive than wall time to other
                     work on a shared machine

Also timed: writing report.html for such a run, cold (a fresh process: imports matplotlib) and
warm (again in the same process), since train writes one into every run.

    PYTHONPATH=src python bench/bench_accounting.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

CONFIG = {
    "name": "seed002-mlp",
    "data": {"source": "builtin:digits"},
    "model": {"type": "mlp", "hidden": [128], "activation": "relu"},
    "train": {"epochs": 10, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9}, "seed": 0},
    "tracking": {"report": False},
}


def one_run(enabled: bool) -> dict:
    from damoxing.api import train

    with tempfile.TemporaryDirectory() as folder:
        cpu_before, started = cpu_seconds(), time.perf_counter()
        run = train({**CONFIG, "cost": {"enabled": enabled}}, out=os.path.join(folder, "run"), quiet=True)
        wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu_before
    train_seconds = run.manifest["timings"]["train_seconds"]
    accounting = run.manifest["cost"]["accounting_seconds"] if enabled else 0.0
    return {"train": train_seconds, "train+accounting": train_seconds + accounting, "accounting": accounting,
            "end to end": wall, "end to end, CPU": cpu, "accuracy": run.metrics["test"]["accuracy"]}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def report_seconds() -> tuple[float, float]:
    """(cold, warm) seconds of write_report on a fresh run of the same model."""
    from damoxing.api import train
    from damoxing.report.html import write_report

    with tempfile.TemporaryDirectory() as folder:
        run = train({**CONFIG, "tracking": {"report": False}}, out=os.path.join(folder, "run"), quiet=True)
        code = ("import time, sys; t = time.perf_counter(); from damoxing.report.html import write_report; "
                "write_report(sys.argv[1]); print(time.perf_counter() - t)")
        cold = float(subprocess.run([sys.executable, "-c", code, str(run.path)], capture_output=True, text=True,
                                    check=True, env={**os.environ}).stdout.strip())
        warm = []
        for _ in range(3):
            started = time.perf_counter()
            write_report(run.path)
            warm.append(time.perf_counter() - started)
    return cold, statistics.median(warm)


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    import torch

    one_run(True), one_run(False)  # warm-up: imports, allocator, the digits cache
    results: dict[bool, list[dict]] = {True: [], False: []}
    for i in range(args.repeats):
        order = (True, False) if i % 2 == 0 else (False, True)
        for enabled in order:
            results[enabled].append(one_run(enabled))
    assert {r["accuracy"] for r in results[True]} == {r["accuracy"] for r in results[False]}, "accounting changed the result"

    def median(enabled: bool, key: str) -> float:
        return statistics.median(r[key] for r in results[enabled])

    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), Python {platform.python_version()}; "
          f"{args.repeats} repeats per arm, medians")
    print("| measure | accounting off (s) | accounting on (s) | on / off |")
    print("|---|---|---|---|")
    for off_key, on_key, label in [("train", "train", "training time (the loop)"),
                                   ("train", "train+accounting", "training + accounting"),
                                   ("end to end", "end to end", "end to end (damoxing.train)"),
                                   ("end to end, CPU", "end to end, CPU", "end to end, process CPU-seconds")]:
        off, on = median(False, off_key), median(True, on_key)
        print(f"| {label} | {off:.4f} | {on:.4f} | {on / off:.3f} |")
    accounting = median(True, "accounting")
    print(f"accounting itself: median {accounting * 1000:.2f} ms per run = "
          f"{100 * accounting / median(True, 'train'):.2f}% of the median training time")
    cold, warm = report_seconds()
    print(f"report.html for this run: {cold:.2f} s cold (fresh process, imports included), {warm:.2f} s warm")


if __name__ == "__main__":
    main()
