"""Bounded load test of `damoxing serve` against 127.0.0.1 (stops by itself).

For a tiny table MLP and a small text transformer (trained here in seconds): requests/s and p50/p99
latency at CLIENTS concurrent clients (one row per request) for micro-batching on and off, the torch
and onnx backends, and a plain FastAPI endpoint calling the model once per request.

    PYTHONPATH=src python bench/serve.py [--clients 32] [--seconds 10] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PLAIN_APP = """
import sys
from fastapi import FastAPI, Request
from damoxing.api import load
import pandas as pd
predictor = load(sys.argv[1])
app = FastAPI()

@app.post("/predict")
async def predict(request: Request):
    body = await request.json()
    data = pd.DataFrame(body["rows"]) if "rows" in body else body["texts"]
    return {"predictions": [str(v) for v in predictor.predict(data)]}

import uvicorn
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def train_runs(folder: Path) -> dict:
    import pandas as pd

    from damoxing.api import train

    rng = np.random.default_rng(0)
    n = 600
    table = pd.DataFrame({"width": rng.normal(size=n), "height": rng.normal(10, 3, size=n), "colour": rng.choice(["red", "green", "blue"], size=n)})
    table["kind"] = np.where(table["width"] + (table["colour"] == "red") > 0.5, "big", "small")
    table.to_csv(folder / "table.csv", index=False)
    words = {"sport": "ball goal team match score player", "food": "bread soup apple cheese rice salad"}
    texts = [(" ".join(rng.choice(words[t].split(), size=8)), t) for t in rng.choice(list(words), size=400)]
    pd.DataFrame(texts, columns=["text", "label"]).to_csv(folder / "text.csv", index=False)
    common = {"train": {"epochs": 2, "batch_size": 32}, "evaluate": {"bootstrap": 0}, "tracking": {"report": False}}
    mlp = train({"name": "mlp", "data": {"source": str(folder / "table.csv"), "target": "kind"}, "model": {"type": "mlp"}, **common},
                out=folder / "mlp", quiet=True).path
    text = train({"name": "text", "data": {"source": str(folder / "text.csv"), "target": "label"},
                  "model": {"type": "transformer", "size": "small"}, **common}, out=folder / "text", quiet=True).path
    return {"mlp": (mlp, {"rows": table.drop(columns="kind").head(64).to_dict(orient="records")}),
            "text transformer": (text, {"texts": [t for t, _ in texts[:64]]})}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: list[str], port: int) -> subprocess.Popen:
    import httpx

    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {' '.join(command)}")
        try:
            httpx.post(f"http://127.0.0.1:{port}/predict", json={"rows": []}, timeout=2)
            return proc
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not start")


async def load(url: str, bodies: list[dict], clients: int, seconds: float) -> dict:
    import httpx

    latencies, errors = [], 0
    stop = time.perf_counter() + seconds

    async def client(i: int, http: httpx.AsyncClient):
        nonlocal errors
        k = i
        while time.perf_counter() < stop:
            t = time.perf_counter()
            r = await http.post(url, json=bodies[k % len(bodies)])
            latencies.append(time.perf_counter() - t)
            errors += r.status_code != 200
            k += clients

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=60) as http:
        begun = time.perf_counter()
        await asyncio.gather(*(client(i, http) for i in range(clients)))
        took = time.perf_counter() - begun
    ms = np.array(latencies) * 1000
    return {"requests": len(ms), "errors": errors, "req_per_s": len(ms) / took, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    (folder / "plain.py").write_text(PLAIN_APP)
    results = []
    for model, (run, payload) in train_runs(folder).items():
        key = "rows" if "rows" in payload else "texts"
        bodies = [{key: [item]} for item in payload[key]]
        variants = {
            "damoxing serve, batching on (max-batch 64, max-wait 1 ms)": ["--max-batch", "64", "--max-wait-ms", "1"],
            "damoxing serve, batching on (max-batch 64, max-wait 5 ms)": ["--max-batch", "64", "--max-wait-ms", "5"],
            "damoxing serve, batching off (max-batch 1)": ["--max-batch", "1"],
            "damoxing serve --backend onnx, batching on (1 ms)": ["--backend", "onnx", "--max-batch", "64", "--max-wait-ms", "1"],
            "plain FastAPI, model called per request": None,
        }
        for name, options in variants.items():
            port = free_port()
            command = ([sys.executable, "-m", "damoxing", "serve", str(run), "--port", str(port), *options] if options is not None
                       else [sys.executable, str(folder / "plain.py"), str(run), str(port)])
            proc = start(command, port)
            try:
                asyncio.run(load(f"http://127.0.0.1:{port}/predict", bodies, args.clients, 2))  # warm-up
                result = {"model": model, "server": name, **asyncio.run(load(f"http://127.0.0.1:{port}/predict", bodies, args.clients, args.seconds))}
            finally:
                proc.terminate()
                proc.wait(timeout=30)
            results.append(result)
            print(f"| {model} | {name} | {result['req_per_s']:.0f} | {result['p50_ms']:.1f} | {result['p99_ms']:.1f} | {result['errors']} |", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
