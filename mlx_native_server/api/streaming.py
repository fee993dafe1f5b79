"""One generation request between the HTTP event loop and the engine: the
front-end skeleton every API shares.

The engine is threaded (mlx-lm's generation thread, whose iterators block),
HTTP is asyncio (uvicorn). Each request gets a worker thread that starts
the generation, turns its Deltas into encoded events through the API's
`FrontEnd`, and hands them to the event loop through a `Channel`; the loop
writes whatever has piled up in one send, so a slow client costs one write
per batch of tokens, not one per token, and the worker never waits on the
network (channel.py: the `Channel` and the `Writer` on the event loop).
Written once here, for every API:

- the model check, session hint and test-hook field (`parse_common`);
- admission and engine errors as that API's error (App.start);
- a streamed request opens its stream once it has queued for a keep-alive
  interval, and no stream stays silent longer than that interval;
- a client that leaves cancels its generation, prefill included;
- a failure mid-stream, or a stop of the server, ends the stream with the
  API's terminal error event; before the stream opens it is a JSON error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterable
from typing import Any, Protocol

from ..engine.generation import Generation
from ..engine.types import ChatRequest, Delta, PrefillCancelled
from .channel import DONE, GONE, STARTED, Body, Channel, Failed, Framing, Writer
from .errors import ApiError

log = logging.getLogger("mlx_native_server.http")

Event = tuple[str | None, Any]  # (SSE event name or None, data: a JSON value or text)

SESSION_HEADERS = ("x-session-affinity", "x-session-id", "x-claude-code-session-id")
TEST_SCRIPT_FIELD = "x_mns_script"


class ClientGone(Exception):
    """The client closed the connection."""


def session_id(headers) -> str | None:
    """The agent session a request belongs to, from the headers clients send."""
    for name in SESSION_HEADERS:
        if headers.get(name):
            return headers.get(name)
    return None


def sse(events: Iterable[Event]) -> bytes:
    """Server-sent events, encoded."""
    out = []
    for name, data in events:
        text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
        out.append(f"event: {name}\ndata: {text}\n\n" if name else f"data: {text}\n\n")
    return "".join(out).encode()


class FrontEnd(Framing, Protocol):
    """What one API supplies for one request: its parser's result and its encoders.
    Its methods run on the worker thread; those of `Framing` (`heartbeat`,
    `failure`) on the event loop."""

    messages_param: str  # the body field that holds the conversation

    def opening(self, gen: Generation) -> list[Event]: ...
    def progress(self, gen: Generation) -> list[Event]: ...
    def feed(self, delta: Delta) -> list[Event]: ...
    def closing(self, gen: Generation) -> list[Event]: ...
    def body(self, gen: Generation) -> dict: ...


class Exchange:
    """One generation request: `work()` on a worker thread, `respond()` on
    the event loop. `abort(error)` (any thread) ends it with that error."""

    def __init__(self, app, request: ChatRequest, fe: FrontEnd, loop: asyncio.AbstractEventLoop):
        self.app = app
        self.request = request
        self.fe = fe
        self.channel = Channel(loop)
        self.gone = threading.Event()
        self.aborted = False
        self.queued = False  # waits behind other requests: its stream may open early
        self.gen: Generation | None = None
        self._fe_lock = threading.Lock()  # progress (engine thread) and feed (worker) interleave

    # --- worker thread -------------------------------------------------

    def work(self) -> None:
        try:
            gen = self.app.start(self, progress=self._progress, waiting=self._waiting)
        except ApiError as e:
            self.channel.put(Failed(e))
            return
        except (ClientGone, PrefillCancelled):
            return
        self.gen = gen
        try:
            self._run(gen)
        except (ClientGone, PrefillCancelled):
            pass
        except Exception as e:  # an engine failure fails this request only
            log.exception("generation failed")
            self.app.engine.recover()
            self.channel.put(
                Failed(ApiError(500, f"Generation failed: {type(e).__name__}: {e}", "server_error"))
            )
        finally:
            gen.cancel()  # a no-op once finished; stops the engine if we bailed out
            self.app.finish(self)

    def _run(self, gen: Generation) -> None:
        fe, put = self.fe, self.channel.put
        if self.gone.is_set():
            raise ClientGone()
        put(STARTED)
        if fe.stream:
            self._send(fe.opening(gen))
        for d in gen:
            with self._fe_lock:
                events = fe.feed(d)
            if events and fe.stream:
                put(sse(events), lazy=True)
        if self.aborted or self.gone.is_set():
            return
        if fe.stream:
            with self._fe_lock:
                self._send(fe.closing(gen))
            put(DONE)
        else:
            put(Body(fe.body(gen)))

    def _send(self, events: list[Event]) -> None:
        if events:
            self.channel.put(sse(events))

    def _progress(self, _done: int, _total: int) -> None:
        gen = self.gen
        if gen is not None and self.fe.stream:
            with self._fe_lock:
                self._send(self.fe.progress(gen))

    def _waiting(self) -> None:
        """Called by the engine while the request queues behind others. The
        first call checks the prompt against the context cap, so an
        overflow is still a 400 (clients compact on it), then lets the
        stream open and keep alive while it waits."""
        if self.gone.is_set() or self.aborted:
            raise ClientGone()
        if not self.queued:
            self.app.engine.check_context(self.request)
            self.queued = True

    # --- any thread ----------------------------------------------------

    def cancel(self) -> None:
        gen = self.gen
        if gen is not None:
            gen.cancel()

    def abort(self, error: ApiError) -> None:
        """End the request with `error` (its stream's terminal error event)."""
        self.aborted = True
        self.cancel()
        self.channel.put(Failed(error))

    # --- event loop ----------------------------------------------------

    async def respond(self, receive, send) -> None:
        watcher = asyncio.ensure_future(self._watch(receive))
        try:
            interval = self.app.settings.keepalive_interval
            await Writer(send, self.channel, self.fe, interval, lambda: self.queued).run()
        finally:
            watcher.cancel()

    async def _watch(self, receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not self.gone.is_set():
            self.gone.set()
            log.info("client disconnected; cancelling its generation")
            self.cancel()
            self.channel.put(GONE)
