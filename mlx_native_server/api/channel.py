"""The event-loop half of one generation request: from the worker thread to
the client.

The worker puts encoded events and control items into a `Channel`; the
`Writer`, on the event loop, takes whatever has piled up and writes it in
one send: a whole JSON response, or an event stream it keeps alive and ends
with the API's terminal error event if the request fails. `send_json` and
`encode_headers` write a whole JSON response through any ASGI `send`.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import ApiError, error_body

log = logging.getLogger("mlx_native_server.http")

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


class Framing(Protocol):
    """The part of an API's front end the event loop uses: how its responses
    look on the wire. Called on the event loop, never on the worker."""

    flavor: str  # error shape: "openai" or "anthropic"
    stream: bool

    def heartbeat(self) -> bytes: ...
    def failure(self, error: ApiError) -> bytes: ...


class Writer:
    """Writes what the worker hands over: JSON, or an event stream kept alive.

    `queued()` says whether the request waits behind others; a queued
    stream opens with a keep-alive before the engine takes it."""

    _ticker: asyncio.TimerHandle  # set by run
    _flusher: asyncio.TimerHandle | None  # None until the stream opens

    def __init__(
        self,
        send,
        channel: Channel,
        fe: Framing,
        interval: float,
        queued: Callable[[], bool],
    ):
        self._send, self.channel, self.fe = send, channel, fe
        self.interval, self.queued = interval, queued
        self.opened = False
        self._loop = asyncio.get_running_loop()
        self._last_write = self._loop.time()

    def _tick(self) -> None:
        """Every keep-alive interval, one look at the stream (one timer per
        interval, not one per token)."""
        self._ticker = self._loop.call_later(self.interval, self._tick)
        self.channel.poke()

    def _flush_tick(self) -> None:
        """While the stream is open: take the chunks that came lazily."""
        self._flusher = self._loop.call_later(FLUSH_SECONDS, self._flush_tick)
        if self.channel.has_items():
            self.channel.poke()

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
        fe = self.fe
        while True:
            items = await self.channel.take()
            if not items:
                silent = self._loop.time() - self._last_write >= self.interval * 0.9
                if fe.stream and silent and (self.opened or self.queued()):
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
            status, obj, extra = e.status, error_body(e, self.fe.flavor), e.headers
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
