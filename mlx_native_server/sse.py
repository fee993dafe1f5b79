"""Server-sent event streams over HTTP/1.1 chunked encoding, and a guard that
notices a client that went away.

A stream never stays silent longer than its heartbeat interval (an SSE
comment for OpenAI clients, a `ping` event for Anthropic ones), so clients
with idle timeouts keep the connection through a long prefill or a long
tool call.
"""

from __future__ import annotations

import json
import logging
import select
import socket
import threading
import time
from typing import Any, Callable

log = logging.getLogger("mlx_native_server.http")

_GONE_ERRORS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError, OSError)


class ClientGone(Exception):
    """The client closed the connection."""


def peer_closed(sock: socket.socket) -> bool:
    """True when the peer has closed its end (readable with nothing to read)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


class EventStream:
    """An SSE response: `send(data, event=None)`, `comment(text)`, `close()`.

    Thread-safe: the guard's heartbeat writes from another thread.
    """

    def __init__(self, handler, heartbeat: Callable[["EventStream"], None] | None = None):
        self._handler = handler
        self._lock = threading.Lock()
        self._heartbeat = heartbeat
        self.last_write = time.monotonic()
        self.closed = False
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream; charset=utf-8")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("X-Accel-Buffering", "no")
        handler.send_cors_headers()
        handler.end_headers()
        handler.headers_sent = True
        handler.stream = self

    def _write(self, data: bytes) -> None:
        with self._lock:
            if self.closed:
                raise ClientGone()
            try:
                self._handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self._handler.wfile.flush()
            except _GONE_ERRORS as e:
                self.closed = True
                raise ClientGone() from e
            self.last_write = time.monotonic()

    def send(self, data: Any, event: str | None = None) -> None:
        text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
        head = f"event: {event}\n" if event else ""
        self._write(f"{head}data: {text}\n\n".encode())

    def comment(self, text: str = "keep-alive") -> None:
        self._write(f": {text}\n\n".encode())

    def heartbeat(self) -> None:
        if self._heartbeat is None:
            self.comment()
        else:
            self._heartbeat(self)

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            try:
                self._handler.wfile.write(b"0\r\n\r\n")
                self._handler.wfile.flush()
            except _GONE_ERRORS:
                pass


class ConnectionGuard:
    """While a request generates: call `on_gone` once the client disconnects,
    and keep `stream` (if any) from staying silent longer than `interval`."""

    POLL_SECONDS = 0.25

    def __init__(self, sock: socket.socket, on_gone: Callable[[], None],
                 stream: EventStream | None = None, interval: float = 5.0):
        self._sock = sock
        self._on_gone = on_gone
        self._stream = stream
        self._interval = interval
        self._done = threading.Event()
        self.gone = False
        self._thread = threading.Thread(target=self._run, name="connection-guard", daemon=True)

    def __enter__(self) -> "ConnectionGuard":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        while not self._done.wait(self.POLL_SECONDS):
            if peer_closed(self._sock):
                self._gone()
                return
            stream = self._stream
            if stream is not None and time.monotonic() - stream.last_write >= self._interval:
                try:
                    stream.heartbeat()
                except ClientGone:
                    self._gone()
                    return

    def _gone(self) -> None:
        self.gone = True
        log.info("client disconnected; cancelling its generation")
        self._on_gone()


def open_stream(handler, heartbeat=None) -> EventStream:
    """The request's event stream: the one opened while it queued, or a new one."""
    return handler.stream if handler.stream is not None else EventStream(handler, heartbeat)


def while_queued(handler, stream: bool, heartbeat=None) -> Callable[[], None]:
    """The `waiting` callback of a request queued behind another: a streamed
    one opens its stream early and keeps it alive; either kind gives up
    (ClientGone) once its client has left."""

    def waiting() -> None:
        if peer_closed(handler.connection):
            raise ClientGone()
        if stream:
            open_stream(handler, heartbeat).heartbeat()

    return waiting
