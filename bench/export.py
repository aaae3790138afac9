"""What `damoxing export` costs and what it gives, family by family: export time and file size for ONNX
and torch.export, the parity check's numbers, and batch-1 latency of the run's torch model against
onnxruntime on the exported graph.

Each family's `size: small` variant is trained for a few epochs on bundled or generated data (digits
as a table and as images; 400 two-topic sentences; a corpus of them; the pretrained row is the tiny
random BERT of the tests unless --minilm, which fine-tunes the bundled all-MiniLM-L6-v2 with LoRA).
Then, in one process: `export_onnx` and `export_torch` (each checked on the run's test rows), and the
latency of one test row (median of N calls, the two runtimes alternated over R repeats, best median
kept), torch with torch.set_num_threads(T), onnxruntime with intra_op_num_threads=T.

    PYTHONPATH=src python bench/export.py [--threads 1] [--calls 200] [--repeats 3] [--minilm]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def data(folder: Path) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from hf_fixtures import two_topic_sentences, write_tiny_bert, write_topics_csv

    texts, _ = two_topic_sentences(400, seed=3)
    (folder / "corpus.txt").write_text("\n".join(texts) + "\n")
    return {"table": {"source": "builtin:digits"}, "image": {"source": "builtin:digits_images"},
            "text": {"source": str(write_topics_csv(folder / "topics.csv", n=400)), "target": "label"},
            "corpus": {"source": str(folder / "corpus.txt"), "block_size": 64},
            "bert": str(write_tiny_bert(folder / "bert", texts=texts))}


def cases(sources: dict, minilm: bool) -> list[tuple[str, str, dict]]:
    pretrained = {"type": "pretrained", "path": "minilm" if minilm else sources["bert"], "finetune": "lora"}
    return [("linear", "table", {"type": "linear"}), ("mlp", "table", {"type": "mlp", "size": "small"}),
            ("cnn", "image", {"type": "cnn", "size": "small"}), ("rnn (lstm, 2 directions)", "text", {"type": "rnn", "size": "small", "bidirectional": True}),
            ("transformer", "text", {"type": "transformer", "size": "small"}), ("gpt (language model)", "corpus", {"type": "gpt", "size": "small"}),
            ("vae (decoder)", "image", {"type": "vae", "size": "small"}), ("gan (generator)", "image", {"type": "gan", "size": "small"}),
            (f"pretrained ({'MiniLM' if minilm else 'tiny BERT'}, LoRA merged)", "text", pretrained),
            ("sklearn (hist gradient boosting)", "table", {"type": "sklearn", "estimator": "hist_gradient_boosting"})]


def median_ms(call, n: int) -> float:
    for _ in range(10):
        call()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def latencies(predictor, onnx_path: Path, threads: int, calls: int, repeats: int) -> tuple[float, float]:
    """(torch ms, onnxruntime ms) for one row, best median over the repeats, the two alternated."""
    import torch

    from damoxing.deploy.export import check_inputs
    from damoxing.inference.onnx_model import OnnxModel

    inputs = check_inputs(predictor)
    one, reference = inputs.rows[:1], inputs.reference
    session = OnnxModel.load(onnx_path, threads=threads)
    torch.set_num_threads(threads)
    best_torch, best_ort = float("inf"), float("inf")
    with torch.inference_mode():
        for _ in range(repeats):
            best_torch = min(best_torch, median_ms(lambda: reference(one), calls))
            best_ort = min(best_ort, median_ms(lambda: session(one), calls))
    return best_torch, best_ort


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--minilm", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from damoxing.api import load, train
    from damoxing.deploy.export import export_onnx, export_torch

    torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
          f"torch {torch.__version__}; threads {args.threads}")
    print("| model | test rows | ONNX s | ONNX KB | max abs diff | agreement | .pt2 s | .pt2 KB | max abs diff | torch 1-row ms | ORT 1-row ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sources = data(folder)
        for label, kind, model in cases(sources, args.minilm):
            config = {"name": "bench", "data": sources[kind], "model": model, "evaluate": {"bootstrap": 0}, "tracking": {"report": False},
                      "train": {"epochs": args.epochs, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.002}}}
            run = train(config, out=folder / f"run-{len(list(folder.iterdir()))}", quiet=True).path
            predictor = load(run)
            onnx = export_onnx(predictor, folder / f"{run.name}.onnx")
            torch_cells = ["-", "-", "-"]
            if predictor.model_format != "onnx":
                program = export_torch(predictor, folder / f"{run.name}.pt2")
                torch_cells = [f"{program.export_seconds:.1f}", f"{program.bytes / 1e3:,.0f}", f"{program.parity.max_abs_diff:.1e}"]
                torch_ms, ort_ms = latencies(predictor, folder / f"{run.name}.onnx", args.threads, args.calls, args.repeats)
            else:
                torch_ms, ort_ms = float("nan"), float("nan")
            p = onnx.parity
            rows = max(c.shape[0] for c in p.checks)
            print(f"| {label} | {rows} | {onnx.export_seconds:.1f} | {onnx.bytes / 1e3:,.0f} | {p.max_abs_diff:.1e} | {p.agreement:.3f} | "
                  f"{' | '.join(torch_cells)} | {torch_ms:.3f} | {ort_ms:.3f} |", flush=True)


if __name__ == "__main__":
    main()
