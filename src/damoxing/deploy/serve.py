"""`damoxing serve RUN`: a run behind HTTP (FastAPI), its request models built from the run's schema.

Endpoints: POST /predict (micro-batched, deploy/batching.py), POST /generate (language models:
server-sent events; vae/gan: a base64 PNG grid), POST /embed (runs with a sentence encoder), GET
/health, /ready, /metadata (the run's metrics, cost and schema), /metrics (Prometheus), and a
try-it page at / (deploy/page.py). The app holds no state between requests beyond the loaded model,
so scaling out is N workers or N replicas behind any load balancer.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import queue
import tempfile
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from damoxing.core.errors import UserError
from damoxing.deploy import schemas

LOOPBACK = ("127.0.0.1", "localhost", "::1")
API_KEY_ENV = "DAMOXING_API_KEY"


@dataclass
class ServeOptions:
    backend: str = "torch"
    max_batch: int = 64
    max_wait_ms: float = 1.0
    max_rows: int = 1000
    max_body_bytes: int = 1_000_000
    api_key: Optional[str] = None


def load_for_serving(run: str | Path, backend: str):
    """The run's Predictor; with backend 'onnx' its model is replaced by an ONNX export of it (checked by export)."""
    from damoxing.inference.predictor import load

    if backend not in ("torch", "onnx"):
        raise UserError(f"--backend '{backend}' is not a serving backend; use torch (the run's own model) or onnx "
                        "(the run exported to ONNX and run with onnxruntime).")
    predictor = load(run)
    if backend == "onnx" and predictor.model_format != "onnx":
        if predictor.task_name not in ("classification", "regression"):
            raise UserError(f"--backend onnx serves predictions; '{predictor.path}' is a {predictor.task_name} run. Use --backend torch.")
        from damoxing.deploy.bundle import export_run
        from damoxing.inference.onnx_model import OnnxModel

        folder = Path(tempfile.mkdtemp(prefix="damoxing-serve-"))
        report = export_run(predictor.path, format="onnx", out=folder / "export")
        predictor.model = OnnxModel.load(report.file)
    return predictor


def predict_rows(predictor, items: list) -> list[tuple[Any, Optional[dict]]]:
    """Raw rows (dicts, texts or arrays) -> [(prediction, {class: probability} or None)], one forward pass."""
    import pandas as pd

    kind = predictor.schema.kind
    if kind == "table":
        data: Any = pd.DataFrame.from_records(items, columns=list(predictor.preprocessing.feature_columns))
    elif kind == "text":
        data = list(items)
    else:
        data = np.asarray(items, dtype=np.float32)
    out = predictor.outputs(data)
    if predictor.task_name == "classification":
        labels = predictor.preprocessing.decode_labels(predictor.decisions(out, data))
        names = [str(c) for c in predictor.classes_]
        return [(str(label), dict(zip(names, map(float, p)))) for label, p in zip(labels, out)]
    values = np.asarray(predictor.preprocessing.decode_regression(out), dtype=float)
    return [(v.tolist() if np.ndim(v) else float(v), None) for v in values]


def run_metadata(predictor, options: ServeOptions) -> dict:
    from damoxing.runs.folder import read_json

    path = predictor.path
    manifest = read_json(path / "manifest.json") if (path / "manifest.json").is_file() else {}
    metrics = read_json(path / "metrics.json") if (path / "metrics.json").is_file() else {}
    return {"run": path.name, "task": predictor.task_name, "model": predictor.config.model.type, "backend": options.backend,
            "schema": predictor.schema.to_dict(), "feature_columns": list(getattr(predictor.preprocessing, "feature_columns", None) or []),
            "metrics": metrics, "cost": manifest.get("cost"), "created": manifest.get("created"),
            "limits": {"max_rows": options.max_rows, "max_body_bytes": options.max_body_bytes,
                       "max_batch": options.max_batch, "max_wait_ms": options.max_wait_ms}}


class Metrics:
    """Prometheus metrics of one app, in its own registry."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("damoxing_requests", "HTTP requests", ["path", "status"], registry=self.registry)
        self.errors = Counter("damoxing_errors", "HTTP requests answered 4xx or 5xx", ["path", "status"], registry=self.registry)
        self.latency = Histogram("damoxing_request_seconds", "request latency", ["path"], registry=self.registry,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10))
        self.batch = Histogram("damoxing_batch_rows", "rows per forward pass of the micro-batcher", registry=self.registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024))


class Guard:
    """ASGI middleware: API key (when set), body size limit (413), request metrics."""

    def __init__(self, app, options: ServeOptions, metrics: Metrics):
        self.app, self.options, self.metrics = app, options, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, started, status = scope["path"], time.perf_counter(), {"code": 500}

        async def send_counted(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            refused = self._refusal(scope)
            if refused is None:
                receive, refused = await self._limited_body(scope, receive)
            if refused is not None:
                await _send_json(send_counted, *refused)
            else:
                await self.app(scope, receive, send_counted)
        finally:
            known = path if path in KNOWN_PATHS else "other"
            self.metrics.requests.labels(known, str(status["code"])).inc()
            if status["code"] >= 400:
                self.metrics.errors.labels(known, str(status["code"])).inc()
            self.metrics.latency.labels(known).observe(time.perf_counter() - started)

    def _refusal(self, scope) -> Optional[tuple[int, str]]:
        if self.options.api_key is None:
            return None
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-api-key", b"").decode("latin-1")
        auth = headers.get(b"authorization", b"").decode("latin-1")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if given and hmac.compare_digest(given.encode(), self.options.api_key.encode()):
            return None
        return 401, f"Missing or wrong API key: send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY' (the server reads it from {API_KEY_ENV})."

    async def _limited_body(self, scope, receive):
        """Read the whole body up to the limit; (replaying receive, None) or (receive, (413, message))."""
        limit, chunks, size = self.options.max_body_bytes, [], 0
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        too_big = (413, f"The request body is over the server's limit of {limit} bytes; send fewer rows per request.")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return receive, too_big
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return receive, None
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return receive, (400, "The client disconnected before the body was sent.")
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                return receive, too_big
            if not message.get("more_body"):
                break
        body, sent = b"".join(chunks), {"done": False}

        async def replay():
            if not sent["done"]:
                sent["done"] = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay, None


KNOWN_PATHS = ("/", "/predict", "/generate", "/embed", "/health", "/ready", "/metadata", "/metrics", "/docs", "/openapi.json")


async def _send_json(send, status: int, message: str) -> None:
    body = json.dumps({"detail": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def make_app(run: Any, options: Optional[ServeOptions] = None):
    """The FastAPI app serving a run folder (or an already loaded Predictor)."""
    from fastapi import FastAPI

    options = options or ServeOptions()
    predictor = run if hasattr(run, "preprocessing") else load_for_serving(run, options.backend)
    metrics = Metrics()
    batcher = None
    if predictor.task_name in ("classification", "regression"):
        from damoxing.deploy.batching import MicroBatcher

        batcher = MicroBatcher(lambda items: predict_rows(predictor, items), options.max_batch, options.max_wait_ms,
                               on_batch=metrics.batch.observe)

    @asynccontextmanager
    async def lifespan(app):
        if batcher is not None:
            await batcher.start()  # its queue belongs to the server's event loop
        app.state.ready = True
        yield
        app.state.ready = False
        if batcher is not None:
            await batcher.stop()

    app = FastAPI(title=f"damoxing: {predictor.path.name}", lifespan=lifespan,
                  description=f"{predictor.config.model.type} ({predictor.task_name} on {predictor.schema.kind} data), served by damoxing.")
    app.state.ready = False
    _validation_errors(app)
    _common_routes(app, predictor, options, metrics)
    if batcher is not None:
        _predict_route(app, predictor, options, batcher)
    if predictor.task_name in ("language_modeling", "generation"):
        _generate_route(app, predictor)
    from damoxing.models.protocols import SentenceEncoder

    if isinstance(predictor.model, SentenceEncoder):
        _embed_route(app, predictor, options)
    app.add_middleware(Guard, options=options, metrics=metrics)
    return app


def _common_routes(app, predictor, options: ServeOptions, metrics: Metrics) -> None:
    from fastapi import Response
    from fastapi.responses import HTMLResponse, JSONResponse

    from damoxing.deploy.page import try_it_page

    meta = run_metadata(predictor, options)
    page = try_it_page(predictor, meta)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready")
    def ready():
        if not app.state.ready:
            return JSONResponse({"ready": False}, status_code=503)
        return {"ready": True}

    @app.get("/metadata")
    def metadata() -> dict:
        return meta

    @app.get("/metrics")
    def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    def try_it():
        return HTMLResponse(page)


def _validation_errors(app) -> None:
    """422s that name each wrong field (loc, msg) without echoing the input, which may hold NaN (not JSON)."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc):
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                  for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)


def _unprocessable(field: str, message: str):
    from fastapi.responses import JSONResponse

    return JSONResponse({"detail": [{"loc": ["body", field], "msg": message, "type": "value_error"}]}, status_code=422)


def _predict_route(app, predictor, options: ServeOptions, batcher) -> None:
    from fastapi.responses import JSONResponse

    Request = schemas.predict_request(predictor.preprocessing, options.max_rows)
    Response = schemas.predict_response(predictor.schema)
    kind, shape = predictor.schema.kind, tuple(predictor.schema.input_shape)

    async def predict(body):
        if kind == "table":
            items = [row.model_dump(by_alias=True) for row in body.rows]
        elif kind == "text":
            items = list(body.texts)
        else:
            items = []
            for i, item in enumerate(body.inputs):
                array = np.asarray(item, dtype=np.float32) if _regular(item) else None
                if array is None or array.reshape(-1).size != int(np.prod(shape)) or array.ndim not in (len(shape), len(shape) - 1):
                    return _unprocessable(f"inputs[{i}]", f"each input must be an array of shape {shape}")
                items.append(array.reshape(shape))
        try:
            results = await batcher.submit(items)
        except UserError as e:
            return JSONResponse({"detail": str(e)}, status_code=422)
        if predictor.task_name == "classification":
            return {"predictions": [r[0] for r in results], "probabilities": [r[1] for r in results]}
        return {"predictions": [r[0] for r in results]}

    predict.__annotations__ = {"body": Request}
    app.post("/predict", response_model=Response, summary="Predictions for rows of the run's inputs",
             responses={413: {"description": "body too large"}, 422: {"description": "invalid input, naming the field"}})(predict)


def _regular(item) -> bool:
    try:
        np.asarray(item, dtype=np.float32)
        return True
    except ValueError:
        return False


def _generate_route(app, predictor) -> None:
    from fastapi.responses import JSONResponse, StreamingResponse

    lock = threading.Lock()  # one generation at a time: a model's sampling loop is not shared between threads

    async def generate(body: schemas.GenerateRequest):
        if predictor.task_name == "generation":
            return await asyncio.to_thread(_samples, predictor, body, lock)
        from damoxing.inference.text import check_sampling

        try:
            check_sampling(body.max_new_tokens, body.temperature, body.top_k, body.top_p)
        except UserError as e:
            return JSONResponse({"detail": str(e)}, status_code=422)
        warnings = _prompt_warnings(predictor, body.prompt)
        pieces = _text_pieces(predictor, body, lock)
        if not body.stream:
            text, error = await asyncio.to_thread(_collect, pieces)
            if error is not None:
                return JSONResponse({"detail": error}, status_code=422)
            return {"text": text, "warnings": warnings}
        return StreamingResponse(_events(pieces, warnings), media_type="text/event-stream")

    generate.__annotations__ = {"body": schemas.GenerateRequest}
    app.post("/generate", summary="Language models: continue a prompt (server-sent events); vae/gan: images as a base64 PNG, or table rows",
             responses={200: {"content": {"text/event-stream": {}}}})(generate)


def _prompt_warnings(predictor, prompt: str) -> list[str]:
    codec, context = predictor.preprocessing.inputs, predictor.model.context_length
    n = len(codec.encode([prompt])[0]) + (1 if codec.eos_id_ is not None else 0)
    return [f"the prompt is {n} tokens; the model sees only its last {context} (its context length)"] if n > context else []


def _text_pieces(predictor, body, lock) -> "queue.Queue":
    """Start generating in a thread; pieces of text, then None (done) or an Exception, arrive on the queue."""
    from damoxing.inference.text import generate_text

    pieces: queue.Queue = queue.Queue()

    def work():
        with lock:
            try:
                generate_text(predictor, body.prompt, max_new_tokens=body.max_new_tokens, temperature=body.temperature,
                              top_k=body.top_k, top_p=body.top_p, seed=body.seed, on_text=pieces.put)
                pieces.put(None)
            except Exception as e:  # reported to the client as an error event
                pieces.put(e)

    threading.Thread(target=work, daemon=True).start()
    return pieces


def _collect(pieces: "queue.Queue") -> tuple[str, Optional[str]]:
    text = []
    while True:
        item = pieces.get()
        if item is None:
            return "".join(text), None
        if isinstance(item, Exception):
            return "".join(text), str(item)
        text.append(item)


def _events(pieces: "queue.Queue", warnings: list[str]):
    """Server-sent events: `event: warning` lines, one `data:` (a JSON string) per piece, then `event: done`."""
    for warning in warnings:
        yield f"event: warning\ndata: {json.dumps(warning)}\n\n"
    while True:
        item = pieces.get()
        if item is None:
            yield "event: done\ndata: {}\n\n"
            return
        if isinstance(item, Exception):
            yield f"event: error\ndata: {json.dumps(str(item))}\n\n"
            return
        yield f"data: {json.dumps(item)}\n\n"


def _samples(predictor, body, lock) -> dict:
    """vae/gan: n images as one base64 PNG grid, or, trained on a table, n rows in its own columns."""
    from damoxing.inference.images import generate_images

    seed = 0 if body.seed is None else body.seed
    if predictor.schema.kind == "table":
        from damoxing.inference.tables import records, sample_rows

        with lock:
            return {"rows": records(sample_rows(predictor, body.n, seed)), "n": body.n, "seed": seed}
    with tempfile.TemporaryDirectory(prefix="damoxing-serve-") as folder, lock:
        file = generate_images(predictor.path, n=body.n, seed=seed, out=Path(folder) / "images.png")
        return {"png_base64": base64.b64encode(file.read_bytes()).decode("ascii"), "n": body.n, "seed": seed}


def _embed_route(app, predictor, options: ServeOptions) -> None:
    from damoxing.inference.embeddings import encode

    async def embed(body: schemas.EmbedRequest):
        if len(body.texts) > options.max_rows:
            return _unprocessable("texts", f"at most {options.max_rows} texts per request")
        vectors = await asyncio.to_thread(encode, predictor.model, predictor.preprocessing.inputs, list(body.texts),
                                          predictor.model.context_length)
        return {"embeddings": np.asarray(vectors, dtype=float).tolist()}

    embed.__annotations__ = {"body": schemas.EmbedRequest}
    app.post("/embed", response_model=schemas.EmbedResponse, summary="Sentence embeddings (unit vectors)")(embed)


def check_binding(host: str, api_key: Optional[str]) -> None:
    if host not in LOOPBACK and not api_key:
        raise UserError(f"--host {host} makes the server reachable from other machines; set an API key first: "
                        f"export {API_KEY_ENV}=<a long random secret> (clients send 'Authorization: Bearer <key>'), "
                        "or serve on --host 127.0.0.1.")
