"""One generation request between the HTTP event loop and the engine: the
front-end skeleton every API shares.

The engine is threaded (mlx-lm's generation thread, whose iterators block),
HTTP is asyncio (uvicorn). Each request gets a worker thread that starts
the generation, turns its Deltas into encoded events through the API's
`FrontEnd`, and hands them to the event loop through a `Channel`; the loop
writes whatever has piled up in one send, so a slow client costs one write
per batch of tokens, not one per token, and the worker never waits on the
network. Written once here, for every API:

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
import collections
import json
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from ..engine.generation import Generation
from ..engine.types import ChatRequest, Delta, PrefillCancelled
from .errors import ApiError, error_body

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


class FrontEnd(Protocol):
    """What one API supplies for one request: its parser's result and its encoders.
    Methods run on the worker thread, except `heartbeat` and `failure`."""

    flavor: str  # error shape: "openai" or "anthropic"
    messages_param: str  # the body field that holds the conversation
    stream: bool

    def opening(self, gen: Generation) -> list[Event]: ...
    def progress(self, gen: Generation) -> list[Event]: ...
    def feed(self, delta: Delta) -> list[Event]: ...
    def closing(self, gen: Generation) -> list[Event]: ...
    def body(self, gen: Generation) -> dict: ...
    def heartbeat(self) -> bytes: ...
    def failure(self, error: ApiError) -> bytes: ...


# Items the worker hands to the event loop, besides encoded bytes.
STARTED = object()  # the engine has the request: a stream may open
DONE = object()  # the stream's last bytes are sent
GONE = object()  # the client left: stop writing


@dataclass(frozen=True)
class Failed:
    error: ApiError


@dataclass(frozen=True)
class Body:
    obj: dict


FLUSH_SECONDS = 0.02  # stream chunks coming faster than this are sent in batches


class Channel:
    """Items from any thread to one coroutine, which takes all that piled up.

    Waking the event loop from another thread costs a syscall and a thread
    switch. A chunk that comes within FLUSH_SECONDS of the last take waits
    for the writer's flush tick (`lazy`), so a fast stream wakes the loop
    once per tick rather than once per token; the first chunk after a
    silence, and every control item, wake it at once."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._items: collections.deque = collections.deque()
        self._lock = threading.Lock()
        self._waiter: asyncio.Future | None = None
        self._last_take = 0.0

    def put(self, item: Any, lazy: bool = False) -> None:
        with self._lock:
            self._items.append(item)
            if lazy and time.monotonic() - self._last_take < FLUSH_SECONDS:
                return  # the flush tick takes it
            waiter, self._waiter = self._waiter, None
        if waiter is not None:  # wake the loop only when it waits
            self._loop.call_soon_threadsafe(_wake, waiter)

    def has_items(self) -> bool:
        return bool(self._items)

    def poke(self) -> None:
        """(event loop) Wake `take` with whatever there is, perhaps nothing."""
        with self._lock:
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            _wake(waiter)

    async def take(self) -> list:
        """Everything queued; waits for something, or a `poke` ([] then)."""
        with self._lock:
            if not self._items:
                self._waiter = waiter = self._loop.create_future()
            else:
                waiter = None
        if waiter is not None:
            await waiter
        with self._lock:
            self._waiter = None
            items = list(self._items)
            self._items.clear()
            self._last_take = time.monotonic()
        return items


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


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
            await _Writer(self, send).run()
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


class _Writer:
    """Writes what the worker hands over: JSON, or an event stream kept alive."""

    _ticker: asyncio.TimerHandle  # set by run
    _flusher: asyncio.TimerHandle | None  # None until the stream opens

    def __init__(self, ex: Exchange, send):
        self.ex, self._send = ex, send
        self.opened = False
        self.interval = ex.app.settings.keepalive_interval
        self._loop = asyncio.get_running_loop()
        self._last_write = self._loop.time()

    def _tick(self) -> None:
        """Every keep-alive interval, one look at the stream (one timer per
        interval, not one per token)."""
        self._ticker = self._loop.call_later(self.interval, self._tick)
        self.ex.channel.poke()

    def _flush_tick(self) -> None:
        """While the stream is open: take the chunks that came lazily."""
        self._flusher = self._loop.call_later(FLUSH_SECONDS, self._flush_tick)
        if self.ex.channel.has_items():
            self.ex.channel.poke()

    async def run(self) -> None:
        self._ticker = self._loop.call_later(self.interval, self._tick)
        self._flusher = None
        try:
            await self._run()
        finally:
            self._ticker.cancel()
            if self._flusher is not None:
                self._flusher.cancel()

    async def _run(self) -> None:
        fe = self.ex.fe
        while True:
            items = await self.ex.channel.take()
            if not items:
                silent = self._loop.time() - self._last_write >= self.interval * 0.9
                if fe.stream and silent and (self.opened or self.ex.queued):
                    await self._write(fe.heartbeat())  # opens a queued stream
                continue
            chunks: list[bytes | bytearray] = []
            for item in items:
                if item is GONE:
                    return
                if item is STARTED:
                    continue
                if isinstance(item, (bytes, bytearray)):
                    chunks.append(item)
                    continue
                if item is DONE or isinstance(item, Failed) and (self.opened or chunks):
                    last = fe.failure(item.error) if isinstance(item, Failed) else b""
                    await self._write(b"".join(chunks) + last, more=False)
                    return
                await self._json(item)
                return
            if chunks:
                await self._write(b"".join(chunks))

    async def _write(self, data: bytes, more: bool = True) -> None:
        if not self.opened:
            self.opened = True
            self._flusher = self._loop.call_later(FLUSH_SECONDS, self._flush_tick)
            await self._send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-cache"),
                        (b"x-accel-buffering", b"no"),
                    ],
                }
            )
        await self._send({"type": "http.response.body", "body": data, "more_body": more})
        self._last_write = self._loop.time()

    async def _json(self, item: Failed | Body) -> None:
        if isinstance(item, Failed):
            e = item.error
            status, obj, extra = e.status, error_body(e, self.ex.fe.flavor), e.headers
            log.log(
                logging.ERROR if status >= 500 else logging.INFO,
                "generation request -> %d %s",
                status,
                e.message,
            )
        else:
            status, obj, extra = 200, item.obj, {}
        await send_json(self._send, status, obj, encode_headers(extra))


def encode_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


async def send_json(send, status: int, obj: Any, headers: list | None = None) -> None:
    """A whole JSON response through an ASGI `send`."""
    data = json.dumps(obj, ensure_ascii=False).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
