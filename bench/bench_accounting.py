"""What the cost accounting itself costs: seed 002's MLP trained with `cost.enabled` on and off.

One process, the same model, data and hyperparameters (64 -> 128 -> 10 on scikit-learn's digits,
SGD lr 0.01 momentum 0.9, batch 64, 10 epochs); runs with accounting on, off, and off again
take turns (in rotating order) so that a busy machine slows all alike; medians and minima over
the repeats, and the off-again / off ratio as the noise floor. The HTML report and MLflow are off
in every arm: they are not accounting.

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
    # Three arms in rotating order: accounting on, off, and off again. The two "off" arms differ
    # only by chance, so their ratio is the noise floor of this machine at this moment.
    arms = {"on": True, "off": False, "off again": False}
    results: dict[str, list[dict]] = {name: [] for name in arms}
    names = list(arms)
    for i in range(args.repeats):
        for name in names[i % 3:] + names[:i % 3]:
            results[name].append(one_run(arms[name]))
    assert len({r["accuracy"] for rows in results.values() for r in rows}) == 1, "accounting changed the result"

    def stat(arm: str, key: str, how) -> float:
        return how(r[key] for r in results[arm])

    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), Python {platform.python_version()}; "
          f"{args.repeats} repeats per arm")
    print("| measure | off: median (min) s | on: median (min) s | on / off, median (min) | noise floor: off again / off, median (min) |")
    print("|---|---|---|---|---|")
    for off_key, on_key, label in [("train", "train", "training time (the loop)"),
                                   ("train", "train+accounting", "training + accounting"),
                                   ("end to end", "end to end", "end to end (damoxing.train)"),
                                   ("end to end, CPU", "end to end, CPU", "end to end, process CPU-seconds")]:
        cells = []
        for how in (statistics.median, min):
            off, on, again = stat("off", off_key, how), stat("on", on_key, how), stat("off again", off_key, how)
            cells.append((off, on, on / off, again / off))
        (m_off, m_on, m_ratio, m_noise), (b_off, b_on, b_ratio, b_noise) = cells
        print(f"| {label} | {m_off:.4f} ({b_off:.4f}) | {m_on:.4f} ({b_on:.4f}) | {m_ratio:.3f} ({b_ratio:.3f}) "
              f"| {m_noise:.3f} ({b_noise:.3f}) |")
    accounting, training = stat("on", "accounting", statistics.median), stat("on", "train", statistics.median)
    print(f"accounting itself (the meter's own clock): median {accounting * 1000:.2f} ms per run = "
          f"{100 * accounting / training:.2f}% of the median training time; "
          f"min {stat('on', 'accounting', min) * 1000:.2f} ms = {100 * stat('on', 'accounting', min) / stat('on', 'train', min):.2f}% of the min")
    cold, warm = report_seconds()
    print(f"report.html for this run: {cold:.2f} s cold (fresh process, imports included), {warm:.2f} s warm")


if __name__ == "__main__":
    main()
