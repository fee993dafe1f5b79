"""`GET /status`: what the server is doing, for people and for `status`."""

from __future__ import annotations

import time

from . import __version__
from .http_server import Handler, route


@route("GET", "/status", "/v1/status")
def server_status(h: Handler, _body) -> None:
    app = h.app
    engine = app.engine
    s = app.settings
    h.send_json(200, {
        "status": "ok" if engine.alive and engine.loaded and not app.draining else
                  ("loading" if engine.alive and not engine.loaded else "unavailable"),
        "version": __version__,
        "mlx_lm_version": engine.mlx_lm_version,
        "model": {"id": s.served_model_id, "path": str(s.model_path)},
        "context_tokens": s.max_tokens,
        "kv_bits": engine.kv_bits or 0,
        "uptime_seconds": round(time.time() - app.started, 1),
        "requests_served": app.requests_served,
        "requests_in_flight": len(app.active),
        "prompt_cache": engine.cache_stats(),
    })
