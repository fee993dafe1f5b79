"""What the HTTP routes share: settings, the engine, admission (`max_pending`
bounds the requests waiting for the engine) and the requests in flight."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..api.errors import ApiError, context_overflow
from ..api.streaming import ClientGone, Exchange
from ..core.config import Settings
from ..engine.engine import Engine
from ..engine.generation import Generation
from ..engine.types import ContextOverflow, ConversationRefused, EngineUnavailable, MemoryExhausted

log = logging.getLogger("mlx_native_server.http")

RETRY_AFTER_SECONDS = 5  # what a refused client is told to wait before retrying


def engine_unavailable(e: Exception) -> ApiError:
    return ApiError(503, f"The generation engine is unavailable: {e}.", "service_unavailable")


@dataclass
class App:
    """What the routes share: settings, the engine, admission and the
    requests in flight."""

    settings: Settings
    engine: Engine
    test_hooks: bool = False
    started: float = field(default_factory=time.time)
    draining: bool = False
    requests_served: int = 0
    pending: int = 0  # admitted, not yet taken by the engine
    active: set = field(default_factory=set)  # Exchanges the engine has taken
    metrics: Any = None  # a metrics.ServerMetrics, or None
    heap: Any = None  # a heap.Trimmer, or None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def model_names(self) -> set[str]:
        s = self.settings
        return {s.served_model_id, s.model, str(s.model_path), s.model_path.name}

    def check_model(self, requested: Any, flavor: str = "openai") -> None:
        if requested is None or requested in self.model_names():
            return
        if not isinstance(requested, str):
            raise ApiError(400, "'model' must be a string.", param="model")
        if flavor == "anthropic" and requested.startswith("claude-"):
            return  # Claude Code asks for its own model names; serve ours
        raise ApiError(
            404,
            f"The model '{requested}' does not exist; this server serves "
            f"'{self.settings.served_model_id}'.",
            "invalid_request_error",
            code="model_not_found",
            param="model",
        )

    def require_loaded(self) -> None:
        """503 with Retry-After until the model is loaded."""
        if not self.engine.loaded:
            raise ApiError(
                503,
                "The model is still loading; try again shortly.",
                "service_unavailable",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )

    def admit(self, flavor: str) -> None:
        """Take a request into the queue for the engine, or refuse it now."""
        if self.draining:
            raise ApiError(503, "The server is shutting down.", "service_unavailable")
        self.require_loaded()
        if not self.engine.healthy:
            raise ApiError(
                503,
                "The generation engine has failed; the server is restarting.",
                "service_unavailable",
            )
        with self._lock:
            if self.pending >= self.settings.max_pending:
                retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
                if flavor == "anthropic":
                    raise ApiError(
                        529,
                        "The server is overloaded; try again shortly.",
                        "overloaded_error",
                        headers=retry,
                    )
                raise ApiError(
                    429,
                    f"{self.pending} requests are already waiting for the engine "
                    f"(max_pending = {self.settings.max_pending}); try again shortly.",
                    "rate_limit_error",
                    code="server_busy",
                    headers=retry,
                )
            self.pending += 1

    def start(self, ex: Exchange, progress=None, waiting=None) -> Generation:
        """(worker thread) Queue an admitted request on the engine and wait
        until the engine takes it; engine problems become the right ApiError."""
        try:
            gen = Generation(self.engine, ex.request, progress=progress, waiting=waiting)
        except ContextOverflow as e:
            raise context_overflow(e.limit, e.prompt_tokens, ex.fe.flavor) from None
        except ConversationRefused as e:
            raise ApiError(
                400,
                f"Could not render the conversation with the model's chat template: {e}",
                param=ex.fe.messages_param,
            ) from None
        except MemoryExhausted as e:
            if ex.fe.flavor == "anthropic":
                raise ApiError(
                    529, f"Not enough memory for this request: {e}.", "overloaded_error"
                ) from None
            raise ApiError(
                503,
                f"Not enough memory for this request: {e}; send a shorter "
                "conversation or a smaller max_tokens.",
                "service_unavailable",
                code="insufficient_memory",
            ) from None
        except EngineUnavailable as e:
            raise engine_unavailable(e) from None
        except (ApiError, ClientGone):
            raise
        except Exception as e:
            log.exception("generation failed to start")
            self.engine.recover()
            raise ApiError(
                500, f"Generation failed: {type(e).__name__}: {e}", "server_error"
            ) from None
        finally:
            with self._lock:
                self.pending -= 1
        with self._lock:
            self.active.add(ex)
            self.requests_served += 1
        return gen

    def finish(self, ex: Exchange) -> None:
        with self._lock:
            self.active.discard(ex)
        gen = ex.gen
        assert gen is not None, "finish follows a start that set ex.gen"
        t, u = gen.timing, gen.usage
        rate = u.completion_tokens / t.decode_seconds if t.decode_seconds > 0 else 0.0
        lookup = gen.cache_lookup
        log.info(
            "done: prompt=%d cached=%d cache=%s completion=%d (reasoning %d) ttft=%.2fs "
            "decode=%.1f tok/s finish=%s memory=%.0fMB",
            u.prompt_tokens,
            u.cached_tokens,
            lookup.describe() if lookup else "none",
            u.completion_tokens,
            u.reasoning_tokens,
            t.ttft,
            rate,
            gen.finish_reason,
            self.engine.active_memory() / 1e6,
        )
        if self.metrics is not None:
            self.metrics.generation_finished(
                u.prompt_tokens,
                u.cached_tokens,
                u.completion_tokens,
                t.ttft,
                rate,
                lookup.source if lookup else "none",
            )

    def abort_all(self, error: ApiError) -> int:
        """End every request in flight with `error`; returns how many."""
        with self._lock:
            active = list(self.active)
        for ex in active:
            ex.abort(error)
        return len(active)

    def engine_state(self) -> str:
        engine = self.engine
        if not engine.alive or not engine.healthy:
            return "failed"
        if not engine.loaded:
            return "loading"
        return "draining" if self.draining else "ok"
