"""The server process: engine + HTTP, a watchdog, and a clean stop.

SIGTERM or SIGINT: refuse new requests (503), let those in flight finish
within shutdown_timeout, end what is left with its API's terminal error
event, stop HTTP, exit 0. A dead generation engine (exit 3), one that stops
answering (exit 4) or one a failure left unable to compute (exit 5, see
watchdog.py) exits non-zero, so a service manager restarts the server.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import NoReturn

from . import __version__
from .api.errors import ApiError
from .core import blas, heap
from .core.config import Settings
from .core.logrotate import StreamLogs
from .engine.engine import Engine
from .engine.watchdog import verdict
from .http.app import App
from .http.asgi import build_asgi
from .http.metrics import ServerMetrics
from .http.server import HttpServer, bind

log = logging.getLogger("mlx_native_server.server")

ROTATE_EVERY = 60.0  # seconds between size checks of stdout.log and stderr.log


def _write_pid(settings: Settings) -> None:
    pid_file = settings.paths.pid_file(settings.port)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{os.getpid()}\n")


def _remove_pid(settings: Settings) -> None:
    pid_file = settings.paths.pid_file(settings.port)
    try:
        if pid_file.read_text().strip() == str(os.getpid()):
            pid_file.unlink()
    except OSError:
        pass


def _announce_when_ready(app: App, stop: threading.Event) -> None:
    while not stop.wait(0.05):
        if app.engine.loaded:
            s = app.settings
            line = f"ready: {s.base_url} (model {s.served_model_id})"
            log.info(line)
            print(line, flush=True)
            return
        if not app.engine.alive:
            return


def _install_signals(stop: threading.Event, app: App) -> None:
    def handle(signum, _frame):
        if stop.is_set():
            log.warning("second %s: stopping the requests in flight", signal.Signals(signum).name)
            app.abort_all(SHUTDOWN_ERROR)
            return
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def _watch(app: App, stop: threading.Event, logs: StreamLogs) -> int:
    """Wait for a stop signal; return non-zero if the engine dies or hangs first."""
    s = app.settings
    next_rotation = time.monotonic() + ROTATE_EVERY
    while not stop.wait(min(s.watchdog_interval or 1.0, 1.0)):
        if s.watchdog_interval:
            found = verdict(
                app.engine.alive, app.engine.activity, s.watchdog_stall_timeout, app.engine.healthy
            )
            if found is not None:
                log.error("watchdog: %s", found[1])
                return found[0]
        if app.heap is not None:
            app.heap.trim_if_needed()
        if time.monotonic() >= next_rotation:
            logs.rotate()
            next_rotation = time.monotonic() + ROTATE_EVERY
    return 0


SHUTDOWN_ERROR = ApiError(
    503,
    "The server is shutting down; this request was stopped before it finished.",
    "service_unavailable",
)


def _drain(app: App) -> None:
    """Let requests in flight finish within shutdown_timeout, then end the
    rest with their API's terminal error event (the engine stops them)."""
    deadline = time.monotonic() + app.settings.shutdown_timeout
    while (app.active or app.pending) and time.monotonic() < deadline:
        time.sleep(0.05)
    n = app.abort_all(SHUTDOWN_ERROR)
    if n:
        log.info("stopped %d request(s) still in flight", n)
        end = time.monotonic() + 1
        while app.active and time.monotonic() < end:
            time.sleep(0.05)


def _metrics(app: App) -> ServerMetrics:
    """The Prometheus metrics of GET /metrics, reading the app at scrape time."""
    import mlx.core as mx

    def memory() -> dict:
        found = {
            "active": mx.get_active_memory(),
            "peak": mx.get_peak_memory(),
            "cache": mx.get_cache_memory(),
        }
        if app.engine.memory_limit:
            found["limit"] = app.engine.memory_limit
        return found

    engine = app.engine
    return ServerMetrics(
        version=__version__,
        mlx_lm_version=engine.mlx_lm_version,
        model=app.settings.served_model_id,
        memory=memory,
        prompt_cache=engine.cache_stats,
        queue_depth=lambda: app.pending,
        in_flight=lambda: len(app.active),
        engine_state=app.engine_state,
        batching=engine.batch_stats,
    )


def exit_now(code: int) -> NoReturn:
    """Exit without running interpreter teardown: logs are flushed and the
    engine joined by now, and mlx's static destructors can abort ("terminate
    called without an active exception") while daemon threads linger, which
    would turn a clean stop into a crash that a service manager restarts. A
    hung generation thread (watchdog exit 4) is not a daemon and would keep
    a normal exit waiting forever."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run(settings: Settings, plan=None) -> int:
    """Serve until stopped; returns the exit code. `plan` (a memory_plan.Plan)
    guards each request's memory before its prefill."""
    test_hooks = os.environ.get("MLX_NATIVE_SERVER_TEST_HOOKS") == "1"
    p = settings.paths
    logs = StreamLogs(p.stdout_log, p.stderr_log, settings.log_max_bytes, settings.log_backups)
    logs.adopt()
    logs.rotate()
    heap.limit_arenas()  # before the engine's and the server's threads start
    engine = Engine(settings, test_hooks=test_hooks)
    if plan is not None:
        engine.guard_memory(plan)
    if engine.rank != 0:
        engine.join()  # other ranks compute; rank 0 alone serves HTTP
        return 0
    app = App(settings, engine, test_hooks=test_hooks)
    app.metrics = _metrics(app)
    app.heap = heap.Trimmer()
    server = HttpServer(
        build_asgi(app), bind(settings.host, settings.port), settings.request_timeout
    )
    _write_pid(settings)
    stop = threading.Event()
    _install_signals(stop, app)
    server.start()
    threading.Thread(target=_announce_when_ready, args=(app, stop), daemon=True).start()
    log.info("listening on %s:%d, loading %s", settings.host, settings.port, settings.model_path)
    (log.warning if blas.reference() else log.info)("CPU BLAS: %s", blas.current())
    code = _watch(app, stop, logs)
    app.draining = True
    if code == 0:
        _drain(app)
    server.stop()
    if code == 0:
        engine.stop()
    _remove_pid(settings)
    log.info("stopped (exit %d)", code)
    return code
