"""The HTTP server: uvicorn on its own thread, with deadlines and JSON errors.

uvicorn does HTTP/1.1 framing, keep-alive, HEAD, pipelining and an unread
body's discard (so a body can never be read as the next request). Two
things it leaves to us, both in `GuardedH11`:

- `request_timeout` is a deadline for receiving a whole request, from its
  first byte (or the connection's opening) to the end of its body: uvicorn
  has no header or body deadline, so a client dripping one byte a second
  would hold a connection forever. Past it the client gets a 408 and the
  connection is closed.
- Errors uvicorn makes itself (a malformed request, a head over the size
  limit) are JSON in the shape of the API the request was for, not text.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..api.errors import ApiError, error_body, flavor_of

log = logging.getLogger("mlx_native_server.http")

MAX_HEAD_BYTES = (
    64 * 1024
)  # a head still incomplete at this size is refused (boundary.py checks whole ones)
GRACEFUL_EXIT_SECONDS = 2  # for responses still being written when the server stops


def _raw_json_response(status: int, reason: str, head: bytes, message: str) -> bytes:
    """A whole JSON error response for a request we may not have parsed:
    its shape follows the path in the request line, if that is there."""
    line = head.split(b"\r\n", 1)[0].split(b" ")
    path = line[1].decode("latin-1") if len(line) > 1 else "/"
    body = json.dumps(error_body(ApiError(status, message), flavor_of(path))).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class GuardedH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a whole-request deadline and JSON errors."""

    request_timeout: float = 30.0  # set per server by make_server

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._protocol_error: h11.RemoteProtocolError | None = None
        next_event = self.conn.next_event

        def remember_errors() -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
            try:
                return next_event()
            except h11.RemoteProtocolError as e:
                self._protocol_error = e
                raise

        # Wrapping this one connection's parser, on purpose: uvicorn owns the
        # h11.Connection, so it cannot be subclassed from here.
        self.conn.next_event = remember_errors  # type: ignore[method-assign]
        self._arm()

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.request_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def data_received(self, data: bytes) -> None:
        idle = self.cycle is None or self.cycle.response_complete
        if idle and self.conn.their_state is h11.IDLE:
            self._arm()  # the first byte of a new request starts its clock
        super().data_received(data)
        cycle = self._current()
        if cycle is not None and not cycle.more_body:
            self._disarm()  # the whole request is in

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _current(self):
        """The cycle of the request being received or answered, if any."""
        cycle = self.cycle
        return cycle if cycle is not None and not cycle.response_complete else None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self._current()
        if cycle is not None and not cycle.more_body:
            return  # the request arrived; its response is under way
        if cycle is None or not cycle.response_started:
            head = (
                bytes(self.conn.trailing_data[0][:512])
                if cycle is None
                else (f"{cycle.scope['method']} {cycle.scope['path']} HTTP/1.1".encode())
            )
            self.transport.write(
                _raw_json_response(
                    408,
                    "Request Timeout",
                    head,
                    f"The request did not arrive within request_timeout ({self.request_timeout:g} s).",
                )
            )
        if cycle is not None:
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        e = self._protocol_error
        head = bytes(self.conn.trailing_data[0][:MAX_HEAD_BYTES])
        status = getattr(e, "error_status_hint", 400) if e is not None else 400
        if status == 431 and b"\r\n" not in head:
            status, reason = 414, "URI Too Long"
        else:
            reason = {431: "Request Header Fields Too Large"}.get(status, "Bad Request")
            status = status if status in (400, 431) else 400
        detail = f": {e}" if e is not None and str(e) else ""
        self.transport.write(
            _raw_json_response(status, reason, head, f"Invalid HTTP request{detail}.")
        )
        self.transport.close()


class HttpServer:
    """uvicorn serving `asgi` on an already-bound socket, on its own thread."""

    def __init__(self, asgi, sock: socket.socket, request_timeout: float):
        protocol = type("Guarded", (GuardedH11,), {"request_timeout": request_timeout})
        config = uvicorn.Config(
            asgi,
            http=protocol,
            lifespan="off",
            ws="none",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_keep_alive=max(5, int(request_timeout)),
            timeout_graceful_shutdown=GRACEFUL_EXIT_SECONDS,
            h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        )
        self._server = uvicorn.Server(config)
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        except BaseException:  # uvicorn exits with SystemExit on startup failures
            log.exception("the HTTP server stopped")

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = GRACEFUL_EXIT_SECONDS + 3) -> None:
        """Stop accepting, let responses being written finish, close."""
        self._server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (IPv6 when host has a colon)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(256)
    sock.set_inheritable(True)
    return sock
