"""What `damoxing compress` gives and what it costs: int8, pruning and distillation, before and after on
each run's own test rows.

Cases (each trained here for a few epochs, then compressed with `damoxing.compress`):
  int8 dynamic   an mlp of `size: base` on digits (table); a `transformer` of `size: small` on 600
                 generated two-topic sentences
  int8 static    a cnn of `size: small` on digits images, calibrated on 256 training rows
  prune 50%      structured, on the digits mlp (`size: small`) and cnn (`size: small`), fine-tuned for
                 the run's own epochs
  distill        a pretrained encoder (the tiny random BERT of the tests, or with --minilm the bundled
                 all-MiniLM-L6-v2, LoRA) -> a `transformer` of `size: tiny`, on the sentences

Every figure is compress's own: compression.json's headline metric, McNemar p, agreement, bytes,
parameters, FLOPs per sample, CPU latency at batch 1 and throughput at batch 256 (median over 5
alternating rounds, both models in one process, --threads threads).

    PYTHONPATH=src python bench/compress.py [--threads 1] [--minilm] [--only int8,prune,distill]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN = {"batch_size": 64, "optimizer": {"name": "adam", "lr": 0.002}, "seed": 0}


def sources(folder: Path, minilm: bool) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from hf_fixtures import two_topic_sentences, write_tiny_bert, write_topics_csv

    texts, _ = two_topic_sentences(600, seed=3)
    return {"text": {"source": str(write_topics_csv(folder / "topics.csv", n=600, seed=3)), "target": "label"},
            "encoder": "minilm" if minilm else str(write_tiny_bert(folder / "bert", texts=texts))}


def cases(data: dict, minilm: bool) -> list[tuple[str, str, dict, dict]]:
    """(label, method, the original run's config, compress options)."""
    digits, images = {"source": "builtin:digits"}, {"source": "builtin:digits_images"}
    text = data["text"]
    encoder = {"type": "pretrained", "path": data["encoder"], "finetune": "lora"}
    student = {"name": "student", "data": text, "model": {"type": "transformer", "size": "tiny"},
               "train": {**TRAIN, "epochs": 15, "optimizer": {"name": "adam", "lr": 0.003}}}
    return [
        ("mlp base, int8 dynamic", "quantize", {"data": digits, "model": {"type": "mlp", "size": "base"}, "train": {**TRAIN, "epochs": 20}}, {}),
        ("transformer small, int8 dynamic", "quantize", {"data": text, "model": {"type": "transformer", "size": "small"},
                                                          "train": {**TRAIN, "epochs": 8}}, {}),
        ("cnn small, int8 static", "quantize", {"data": images, "model": {"type": "cnn", "size": "small"}, "train": {**TRAIN, "epochs": 15}},
         {"mode": "static"}),
        ("mlp small, prune 50%", "prune", {"data": digits, "model": {"type": "mlp", "size": "small"}, "train": {**TRAIN, "epochs": 20}},
         {"sparsity": 0.5}),
        ("cnn small, prune 50%", "prune", {"data": images, "model": {"type": "cnn", "size": "small"}, "train": {**TRAIN, "epochs": 15}},
         {"sparsity": 0.5}),
        (f"{'MiniLM' if minilm else 'tiny BERT'} -> transformer tiny, distill", "distill",
         {"data": text, "model": encoder, "train": {**TRAIN, "epochs": 4, "optimizer": {"name": "adamw", "lr": 0.001}}},
         {"student": student, "temperature": 4.0, "alpha": 0.5}),
    ]


def row(label: str, report: dict, seconds: float) -> str:
    q, size, speed = report["quality"], report["size"], report["speed"]
    b, a = size["before"], size["after"]
    test = q.get("mcnemar") or q["paired_bootstrap"]
    f = speed.get("float_onnx")
    float_onnx = f"{f['latency_ms_batch1']:.3f} (int8 {f['int8_latency_speedup']:.2f}x)" if f else "-"
    return (f"| {label} | {q['before']['value']:.4f} | {q['after']['value']:.4f} | {test['p_value']:.3g} | {q.get('agreement', float('nan')):.3f} | "
            f"{b['bytes'] / 1e3:,.0f} -> {a['bytes'] / 1e3:,.0f} ({b['bytes'] / a['bytes']:.1f}x) | "
            f"{b['weight_bytes'] / 1e3:,.0f} -> {a['weight_bytes'] / 1e3:,.0f} ({b['weight_bytes'] / a['weight_bytes']:.1f}x) | {b['params']:,} -> {a['params']:,} | "
            f"{b['flops_per_sample'] / max(a['flops_per_sample'], 1):.2f}x | "
            f"{speed['before']['latency_ms_batch1']:.3f} -> {speed['after']['latency_ms_batch1']:.3f} ({speed['latency_speedup']:.2f}x) | "
            f"{float_onnx} | {speed['throughput_speedup']:.2f}x | {seconds:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--minilm", action="store_true")
    parser.add_argument("--only", default="int8,prune,distill")
    args = parser.parse_args()
    import torch

    from damoxing.api import compress, train

    torch.set_num_threads(args.threads)
    wanted = {"int8": "quantize", "prune": "prune", "distill": "distill"}
    methods = {wanted[name] for name in args.only.split(",")}
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
          f"torch {torch.__version__}, {args.threads} thread(s)")
    print("| case | test acc before | after | McNemar p | agreement | KB on disk | KB of weights | parameters | FLOPs fewer | "
          "latency ms batch 1 | float ONNX ms | throughput batch 256 | compress s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = sources(folder, args.minilm)
        for k, (label, method, config, options) in enumerate(cases(data, args.minilm)):
            if method not in methods:
                continue
            run = train({"name": f"case{k}", **config}, out=folder / f"run{k}", quiet=True).path
            started = time.perf_counter()
            result = compress(run, method, out=folder / f"run{k}-{method}", threads=args.threads, quiet=True, **options)
            print(row(label, result.report, time.perf_counter() - started), flush=True)


if __name__ == "__main__":
    main()
