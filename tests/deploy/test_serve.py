"""`damoxing serve`: the app built from a run's schema, answered in process (TestClient) and by a real
server process over HTTP; bad input is a 4xx, never a 5xx (also under schemathesis); the try-it page
works in headless Chromium."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from damoxing.deploy.batching import MicroBatcher
from damoxing.deploy.serve import ServeOptions, make_app

CHROMIUM = Path("/usr/bin/chromium")
TRAIN = {"epochs": 2, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.01}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """A tiny table classifier (numeric + categorical columns) and a tiny character language model."""
    from damoxing.api import train

    folder = tmp_path_factory.mktemp("serve")
    rng = np.random.default_rng(0)
    n = 160
    table = pd.DataFrame({"width": rng.normal(size=n), "height": rng.normal(10, 3, size=n),
                          "colour": rng.choice(["red", "green", "blue"], size=n)})
    table["kind"] = np.where(table["width"] + 2 * (table["colour"] == "red") > 0.5, "big", "small")
    table.to_csv(folder / "table.csv", index=False)
    (folder / "corpus.txt").write_text("the cat sat on the mat. the dog ran to the park.\n" * 30)
    common = {"train": TRAIN, "evaluate": {"bootstrap": 0}, "tracking": {"report": False}}
    tab = train({"name": "tab", "data": {"source": str(folder / "table.csv"), "target": "kind"},
                 "model": {"type": "mlp", "size": "tiny"}, **common}, out=folder / "tab", quiet=True).path
    lm = train({"name": "lm", "data": {"source": str(folder / "corpus.txt"), "block_size": 16},
                "model": {"type": "gpt", "size": "tiny"}, **common}, out=folder / "lm", quiet=True).path
    return {"tab": tab, "lm": lm, "table": table}


@pytest.fixture(scope="module")
def tab_client(runs):
    with TestClient(make_app(runs["tab"], ServeOptions(max_rows=50, max_body_bytes=20_000))) as client:
        yield client


@pytest.fixture(scope="module")
def lm_client(runs):
    with TestClient(make_app(runs["lm"])) as client:
        yield client


def rows_of(table: pd.DataFrame, n: int) -> list[dict]:
    return table.drop(columns="kind").head(n).to_dict(orient="records")


# ------------------------------------------------------------------------------ in process


def test_predict_gives_the_runs_own_predictions(runs, tab_client):
    from damoxing.api import load

    rows = rows_of(runs["table"], 20)
    response = tab_client.post("/predict", json={"rows": rows})
    assert response.status_code == 200, response.text
    body = response.json()
    predictor = load(runs["tab"])
    frame = pd.DataFrame(rows)
    assert body["predictions"] == [str(v) for v in predictor.predict(frame)]
    proba = np.array([[p["big"], p["small"]] for p in body["probabilities"]])
    np.testing.assert_allclose(proba, predictor.predict_proba(frame), atol=1e-6)
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-5)


def test_the_onnx_backend_serves_the_same_predictions(runs, tab_client):
    from damoxing.deploy.serve import load_for_serving
    from damoxing.inference.onnx_model import OnnxModel

    rows = rows_of(runs["table"], 30)
    predictor = load_for_serving(runs["tab"], "onnx")
    assert isinstance(predictor.model, OnnxModel)  # onnxruntime answers, not torch
    with TestClient(make_app(predictor, ServeOptions(backend="onnx"))) as onnx_client:
        served = onnx_client.post("/predict", json={"rows": rows}).json()
        assert onnx_client.get("/metadata").json()["backend"] == "onnx"
    torch_served = tab_client.post("/predict", json={"rows": rows}).json()
    assert served["predictions"] == torch_served["predictions"]
    np.testing.assert_allclose([[p["big"], p["small"]] for p in served["probabilities"]],
                               [[p["big"], p["small"]] for p in torch_served["probabilities"]], atol=1e-5)


def test_embed_serves_the_runs_sentence_embeddings(tmp_path):
    from hf_fixtures import two_topic_sentences, write_tiny_bert, write_topics_csv

    from damoxing.api import load, train
    from damoxing.inference.embeddings import encode

    texts, _ = two_topic_sentences(60)
    write_tiny_bert(tmp_path / "bert", texts)
    write_topics_csv(tmp_path / "topics.csv", 40)
    run = train({"name": "bert", "data": {"source": str(tmp_path / "topics.csv"), "target": "label"},
                 "model": {"type": "pretrained", "path": str(tmp_path / "bert"), "finetune": "frozen"},
                 "train": {"epochs": 1, "batch_size": 16}, "evaluate": {"bootstrap": 0}, "tracking": {"report": False}},
                out=tmp_path / "run", quiet=True)
    asked = ["the match went to extra time", "slice the onions thinly"]
    with TestClient(make_app(run.path, ServeOptions(max_rows=2))) as client:
        body = client.post("/embed", json={"texts": asked}).json()
        too_many = client.post("/embed", json={"texts": asked + ["one more"]})
        empty = client.post("/embed", json={"texts": []})
    vectors = np.array(body["embeddings"])
    predictor = load(run.path)
    expected = encode(predictor.model, predictor.preprocessing.inputs, asked, predictor.model.context_length)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)  # unit vectors
    assert not np.allclose(vectors[0], vectors[1])
    assert too_many.status_code == 422 and empty.status_code == 422


def test_openapi_shows_the_runs_columns(tab_client):
    spec = tab_client.get("/openapi.json").json()
    row = spec["components"]["schemas"]["Row"]
    assert set(row["properties"]) == {"width", "height", "colour"}
    assert "blue" in row["properties"]["colour"]["description"]
    assert row["additionalProperties"] is False


def test_column_names_that_are_not_identifiers_are_fields_too():
    from types import SimpleNamespace

    from damoxing.deploy.schemas import row_model

    columns = [{"name": "my col", "kind": "numeric", "impute": 1.0}, {"name": "model_config", "kind": "categorical", "impute": "a", "categories": ["a"]}]
    row = row_model(SimpleNamespace(inputs=SimpleNamespace(columns_=columns)))
    assert row.model_validate({"my col": 2.0, "model_config": "a"}).model_dump(by_alias=True) == {"my col": 2.0, "model_config": "a"}
    assert list(row.model_json_schema()["properties"]) == ["my col", "model_config"]
    with pytest.raises(ValueError):
        row.model_validate({"field_0": 2.0})


@pytest.mark.parametrize("body, field", [
    ({"rows": [{"width": "wide"}]}, ["body", "rows", "0", "width"]),
    ({"rows": [{"width": 1.0, "shape": "round"}]}, ["body", "rows", "0", "shape"]),
    ({"rows": []}, ["body", "rows"]),
    ({"rows": [{"width": 1.0}] * 51}, ["body", "rows"]),
    ({"lines": []}, ["body", "rows"]),
])
def test_invalid_rows_are_422_naming_the_field(tab_client, body, field):
    response = tab_client.post("/predict", json=body)
    assert response.status_code == 422
    assert field in [e["loc"] for e in response.json()["detail"]]


@pytest.mark.parametrize("raw", [b'{"rows": [{"width": NaN}]}', b'{"rows": [{"height": -Infinity}]}', b'{"rows": [', b"not json"])
def test_nan_infinity_and_malformed_json_are_422(tab_client, raw):
    response = tab_client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert tab_client.get("/health").status_code == 200  # still serving


def test_body_over_the_limit_is_413_and_unknown_category_is_served(tab_client):
    assert tab_client.post("/predict", content=b"x" * 10_000_000, headers={"content-type": "application/json"}).status_code == 413
    response = tab_client.post("/predict", json={"rows": [{"width": 0.3, "height": None, "colour": "purple"}, {}]})
    assert response.status_code == 200  # 'purple' goes to the unknown bucket, missing values are imputed
    assert len(response.json()["predictions"]) == 2


def test_metadata_and_prometheus_metrics(tab_client):
    meta = tab_client.get("/metadata").json()
    assert meta["schema"]["class_names"] == ["big", "small"] and meta["feature_columns"] == ["width", "height", "colour"]
    assert "accuracy" in meta["metrics"]["test"] and meta["cost"] is not None
    tab_client.post("/predict", json={"rows": [{"width": "x"}]})
    text = tab_client.get("/metrics").text
    assert 'damoxing_requests_total{path="/predict",status="422"}' in text
    assert 'damoxing_errors_total{path="/predict",status="422"}' in text
    assert "damoxing_request_seconds_bucket" in text and "damoxing_batch_rows_count" in text
    assert tab_client.get("/ready").json() == {"ready": True}


def batches_seen(client) -> tuple[float, float]:
    """(forward passes, rows) of the micro-batcher so far, read from /metrics."""
    lines = {line.split(" ")[0]: float(line.split(" ")[1]) for line in client.get("/metrics").text.splitlines() if line.startswith("damoxing_batch_rows_")}
    return lines["damoxing_batch_rows_count"], lines["damoxing_batch_rows_sum"]


@pytest.mark.parametrize("max_batch, merged", [(64, True), (1, False)])
def test_concurrent_requests_share_forward_passes(runs, max_batch, merged):
    rows = rows_of(runs["table"], 24)
    with TestClient(make_app(runs["tab"], ServeOptions(max_batch=max_batch, max_wait_ms=50))) as client:
        answers = [None] * len(rows)

        def ask(i):
            answers[i] = client.post("/predict", json={"rows": [rows[i]]}).json()["predictions"][0]

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(rows))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        passes, total = batches_seen(client)
        alone = client.post("/predict", json={"rows": rows}).json()["predictions"]
    assert total - len(rows) in (0,) or total == 2 * len(rows)
    assert answers == alone  # each request got its own rows' answers back
    assert (passes < len(rows)) == merged


def test_micro_batcher_splits_results_and_survives_errors():
    calls = []

    def double(items):
        calls.append(len(items))
        if -1 in items:
            raise ValueError("bad item")
        return [2 * i for i in items]

    async def main():
        batcher = MicroBatcher(double, max_batch=8, max_wait_ms=20)
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit([i, i + 100]) for i in range(10)))
        with pytest.raises(ValueError):
            await batcher.submit([-1])
        after = await batcher.submit([5])
        await batcher.stop()
        return results, after

    results, after = asyncio.run(main())
    assert results == [[2 * i, 2 * (i + 100)] for i in range(10)]
    assert after == [10]
    assert max(calls) <= 8 and len(calls) < 12


def sse_events(text: str) -> list[tuple[str, str]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines.get("event", "message"), json.loads(lines["data"])))
    return events


def test_generate_streams_server_sent_events(lm_client):
    streamed = lm_client.post("/generate", json={"prompt": "the cat", "max_new_tokens": 12, "seed": 3})
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = sse_events(streamed.text)
    assert events[-1][0] == "done" and all(kind == "message" for kind, _ in events[:-1])
    whole = lm_client.post("/generate", json={"prompt": "the cat", "max_new_tokens": 12, "seed": 3, "stream": False}).json()
    assert "".join(data for _, data in events[:-1]) == whole["text"] and whole["text"]
    long = lm_client.post("/generate", json={"prompt": "the cat sat " * 200, "max_new_tokens": 2, "stream": False}).json()
    assert "context length" in long["warnings"][0]
    assert lm_client.post("/generate", json={"prompt": "x", "temperature": 0}).status_code == 422
    assert lm_client.post("/predict", json={"rows": []}).status_code == 404  # a language model has no /predict


def test_api_key_is_checked_on_every_request(runs):
    from damoxing.core.errors import UserError
    from damoxing.deploy.serve import check_binding

    with TestClient(make_app(runs["tab"], ServeOptions(api_key="s3cret"))) as client:
        assert client.get("/health").status_code == 401
        assert client.get("/metadata", headers={"x-api-key": "wrong"}).status_code == 401
        assert client.get("/metadata", headers={"authorization": "Bearer s3cret"}).status_code == 200
    with pytest.raises(UserError, match="DAMOXING_API_KEY"):
        check_binding("0.0.0.0", None)
    check_binding("0.0.0.0", "key")
    check_binding("127.0.0.1", None)


def test_cli_refuses_public_binding_without_key_and_bad_backend(cli, runs, monkeypatch):
    monkeypatch.delenv("DAMOXING_API_KEY", raising=False)
    result = cli("serve", runs["tab"], "--host", "0.0.0.0")
    assert result.code == 2 and "DAMOXING_API_KEY" in result.err
    result = cli("serve", runs["tab"], "--backend", "tensorrt")
    assert result.code == 2 and "--backend" in result.err
    result = cli("serve", runs["tab"].parent / "nothing-here")
    assert result.code == 2


# --------------------------------------------------------------------------- schemathesis fuzz


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def servers(runs):
    """Real `damoxing serve` processes on free ports: {"tab": base url, "lm": base url}."""
    started, urls = [], {}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).parents[2] / "src"), os.environ.get("PYTHONPATH", "")) if p)}
    env.pop("DAMOXING_API_KEY", None)
    for name in ("tab", "lm"):
        port = free_port()
        started.append(subprocess.Popen([sys.executable, "-m", "damoxing", "serve", str(runs[name]), "--port", str(port), "--max-wait-ms", "1"],
                                        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        urls[name] = f"http://127.0.0.1:{port}"
    try:
        for name, proc in zip(urls, started):
            deadline = time.time() + 120
            while True:
                assert proc.poll() is None, f"damoxing serve exited: {proc.stdout.read()}"
                try:
                    if httpx.get(urls[name] + "/ready", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.time() < deadline, "damoxing serve did not become ready in 120 s"
                time.sleep(0.3)
        yield urls
    finally:
        for proc in started:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.mark.slow
def test_real_server_process_answers_over_http(servers, runs):
    rows = rows_of(runs["table"], 3)
    predicted = httpx.post(servers["tab"] + "/predict", json={"rows": rows}, timeout=30)
    assert predicted.status_code == 200 and len(predicted.json()["predictions"]) == 3
    assert httpx.get(servers["tab"] + "/metadata").json()["model"] == "mlp"
    assert 'damoxing_requests_total{path="/predict",status="200"} 1.0' in httpx.get(servers["tab"] + "/metrics").text
    pieces = []
    with httpx.stream("POST", servers["lm"] + "/generate", json={"prompt": "the", "max_new_tokens": 10, "seed": 0}, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            pieces.append(line)
    assert "event: done" in pieces and any(line.startswith("data: \"") for line in pieces)


@pytest.mark.slow
def test_fuzzed_requests_never_get_a_5xx(servers):
    """schemathesis draws valid and invalid requests for every operation of the OpenAPI (30 each) against the real server: none may get a 5xx."""
    from hypothesis import Phase, given

    schema = schemathesis.openapi.from_dict(httpx.get(servers["tab"] + "/openapi.json").json())
    statuses = []
    modes = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    for operation, mode in [(r.ok(), m) for r in schema.get_all_operations() for m in modes
                            if m == modes[0] or r.ok().method.upper() == "POST"]:  # a GET without parameters has no invalid form

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                  phases=(Phase.explicit, Phase.generate))
        def check(case):
            response = case.call(base_url=servers["tab"], timeout=30)
            statuses.append(response.status_code)
            assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code} {response.text[:300]}"

        check()
    assert len(statuses) >= 30 and 422 in statuses and 200 in statuses
    assert httpx.get(servers["tab"] + "/health").status_code == 200


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless Chromium is not installed (/usr/bin/chromium; apt-get install chromium)")
def test_try_it_page_works_in_headless_chromium(servers, tmp_path):
    def page(url: str) -> str:
        proc = subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
                               "--virtual-time-budget=15000", "--dump-dom", url], capture_output=True, text=True, timeout=120)
        return proc.stdout

    table = page(servers["tab"] + "/?autorun=1")
    assert 'name="colour"' in table and "prediction: " in table and '"big"' in table
    lm = page(servers["lm"] + "/?autorun=1")
    assert "generated: " in lm


@pytest.mark.slow
def test_generate_images_of_a_vae_as_base64_png(tmp_path):
    import base64

    from damoxing.api import train

    run = train({"name": "vae", "data": {"source": "builtin:digits_images"}, "model": {"type": "vae", "size": "tiny"},
                 "train": {"epochs": 1, "batch_size": 64}, "evaluate": {"bootstrap": 0}, "tracking": {"report": False}},
                out=tmp_path / "vae", quiet=True).path
    with TestClient(make_app(run)) as client:
        body = client.post("/generate", json={"n": 4, "seed": 1}).json()
        again = client.post("/generate", json={"n": 4, "seed": 1}).json()
        assert client.post("/generate", json={"n": 0}).status_code == 422
        assert client.post("/predict", json={"inputs": []}).status_code == 404
        page = client.get("/").text
    png = base64.b64decode(body["png_base64"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and body["n"] == 4 and body == again
    assert 'MODE = "images"' in page
