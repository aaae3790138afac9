"""`damoxing serve RUN [--host] [--port] [--workers N] [--backend torch|onnx] [--max-batch] [--max-wait-ms]`.

The app itself is deploy/serve.py. With --workers N uvicorn starts N processes, each loading the run
and building the same app from the settings handed over in an environment variable.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from damoxing.core.errors import UserError

SETTINGS_ENV = "DAMOXING_SERVE_SETTINGS"


def app_from_env():
    """uvicorn's factory for worker processes: the run and options from DAMOXING_SERVE_SETTINGS."""
    from damoxing.deploy.serve import API_KEY_ENV, ServeOptions, make_app

    settings = json.loads(os.environ[SETTINGS_ENV])
    return make_app(settings.pop("run"), ServeOptions(**settings, api_key=os.environ.get(API_KEY_ENV) or None))


def serve(run: str | Path, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, backend: str = "torch",
          max_batch: int = 64, max_wait_ms: float = 1.0, max_rows: int = 1000, max_body_bytes: int = 1_000_000,
          log_level: str = "info") -> None:
    """Serve a run over HTTP until interrupted (see deploy/serve.py for the endpoints).

    Raises:
        UserError: not a run, a bad option, or a --host other than loopback without DAMOXING_API_KEY set.
    """
    import uvicorn

    from damoxing.deploy.serve import (
        API_KEY_ENV,
        ServeOptions,
        check_binding,
        load_for_serving,
        make_app,
    )

    api_key = os.environ.get(API_KEY_ENV) or None
    check_binding(host, api_key)
    if workers < 1 or not 0 < port < 65536 or max_batch < 1 or max_wait_ms < 0 or max_rows < 1 or max_body_bytes < 1:
        raise UserError(f"Serving options out of range: --workers {workers} (1 or more), --port {port} (1-65535), "
                        f"--max-batch {max_batch} (1 or more), --max-wait-ms {max_wait_ms} (0 or more), "
                        f"row limit {max_rows} and body limit {max_body_bytes} (1 or more).")
    options = ServeOptions(backend=backend, max_batch=max_batch, max_wait_ms=max_wait_ms, max_rows=max_rows,
                           max_body_bytes=max_body_bytes, api_key=api_key)
    predictor = load_for_serving(run, backend)  # errors (not a run, a bad backend) before the server starts
    if workers == 1:
        uvicorn.run(make_app(predictor, options), host=host, port=port, log_level=log_level)
        return
    settings = {"run": str(predictor.path), "backend": backend, "max_batch": max_batch, "max_wait_ms": max_wait_ms,
                "max_rows": max_rows, "max_body_bytes": max_body_bytes}
    os.environ[SETTINGS_ENV] = json.dumps(settings)
    uvicorn.run("damoxing.verbs.serve:app_from_env", factory=True, host=host, port=port, workers=workers, log_level=log_level)


def app(run: str | Path, backend: str = "torch", max_batch: int = 64, max_wait_ms: float = 1.0, **limits) -> "object":
    """The FastAPI app of a run, to mount or run with any ASGI server (`damoxing.make_app`)."""
    from damoxing.deploy.serve import API_KEY_ENV, ServeOptions, make_app

    return make_app(run, ServeOptions(backend=backend, max_batch=max_batch, max_wait_ms=max_wait_ms,
                                      api_key=os.environ.get(API_KEY_ENV) or None, **limits))
