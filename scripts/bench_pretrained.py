"""Full vs frozen vs LoRA fine-tuning of the bundled MiniLM on the same data: the table in docs/pretrained.md.

    .venv/bin/python scripts/bench_pretrained.py [--out runs/bench-pretrained] [--threads N]

Two data sets: 400 generated two-topic sentences (sports / cooking, the test suite's generator),
and the 120 labelled four-topic sentences of examples/data/topics-labelled.csv. Each mode trains
for the same epochs with its usual learning rate; the table gives test accuracy (95% CI),
trainable and total parameters, training seconds and the run folder's size.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the generator the tests use

MODES = {  # finetune -> (learning rate, head lr)
    "full": (5e-5, 1e-3),
    "frozen": (3e-3, None),
    "lora": (1e-3, 3e-3),
}


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-pretrained")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()

    import torch
    from hf_fixtures import write_topics_csv

    from damoxing.api import train

    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    datasets = {
        "two topics, 400 generated sentences": (write_topics_csv(args.out / "two-topics.csv", 400), "label"),
        "four topics, 120 sentences (examples/data/topics-labelled.csv)": (ROOT / "examples" / "data" / "topics-labelled.csv", "topic"),
    }
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}\n")
    for title, (source, target) in datasets.items():
        print(f"**{title}**, {args.epochs} epochs, batch 16, AdamW, linear schedule with warm-up\n")
        print("| finetune | lr (head lr) | test accuracy (95% CI) | trainable params | total params | train s | run folder |")
        print("|---|---|---|---:|---:|---:|---:|")
        for mode, (lr, head_lr) in MODES.items():
            run = train({"name": f"minilm-{mode}", "data": {"source": str(source), "target": target},
                         "model": {"type": "pretrained", "path": "minilm", "finetune": mode, "head_lr": head_lr},
                         "train": {"epochs": args.epochs, "batch_size": 16, "optimizer": {"name": "adamw", "lr": lr, "weight_decay": 0.01},
                                   "schedule": {"name": "linear", "warmup_epochs": 0.5}, "monitor": "val_accuracy"}},
                        out=args.out / f"{Path(source).stem}-{mode}", quiet=True)
            m, test, ci = run.manifest, run.metrics["test"], run.metrics["test_ci"]
            lrs = f"{lr:g}" + (f" ({head_lr:g})" if head_lr else "")
            print(f"| {mode} | {lrs} | {test['accuracy']:.3f} ({ci['accuracy'][0]:.3f}-{ci['accuracy'][1]:.3f}) | "
                  f"{m['model']['trainable_params']:,} ({100 * m['model']['trainable_params'] / m['model']['params']:.3g}%) | "
                  f"{m['model']['params']:,} | {m['timings']['train_seconds']:.1f} | {folder_size(run.path) / 1e6:.2f} MB |", flush=True)
        print()


if __name__ == "__main__":
    main()
