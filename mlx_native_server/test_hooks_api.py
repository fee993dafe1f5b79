"""Test-only endpoints, imported by serve.py only with MLX_NATIVE_SERVER_TEST_HOOKS=1.

`POST /_test/break-engine {"hang_seconds": N}` makes the generation thread
block for N seconds, then die, so tests can watch the watchdog act.
"""

from __future__ import annotations

from .api_errors import ApiError
from .http_server import Handler, route


@route("POST", "/_test/break-engine")
def break_engine(h: Handler, body: dict) -> None:
    if not h.app.test_hooks:
        raise ApiError(404, "Unknown path /_test/break-engine.", "not_found_error")
    hang = body.get("hang_seconds", 0)
    if not isinstance(hang, (int, float)) or hang < 0:
        raise ApiError(400, "'hang_seconds' must be a number of seconds, 0 or more.")
    h.app.engine.break_for_test(float(hang))
    h.send_json(200, {"broken": True, "hang_seconds": hang})
