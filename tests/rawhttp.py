"""HTTP/1.1 over a bare socket, for tests that must send what no client
library would (smuggled bodies, conflicting framing, one byte a second) and
see exactly what comes back: every response on a connection, its framing,
and whether the server closed the connection.

    conn = Connection(port)
    conn.send(build("POST", "/nope", body=b"..."))
    reply = conn.read_response()          # Content-Length, chunked or to-close
    conn.wait(0.5)                        # "closed", "data" or "open"
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any

MAX_HEAD = 1 << 20  # bytes of status line + headers before we call it garbage


class PeerClosed(Exception):
    """The server closed (or reset) the connection before a whole response."""


@dataclass
class Response:
    """One response. `complete` is True once its framing said it had ended
    (the whole Content-Length, the last chunk, or EOF for a to-close body)."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    complete: bool = False
    chunked: bool = False
    length: int | None = None  # Content-Length, if it had one

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def json(self) -> Any:
        return json.loads(self.body)

    def events(self) -> list[tuple[str | None, str]]:
        """The body as server-sent events: (event name or None, data text)."""
        return parse_sse(self.body.decode("utf-8", "replace"))


def parse_sse(text: str) -> list[tuple[str | None, str]]:
    events, name, data = [], None, []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line:
            if data:
                events.append((name, "\n".join(data)))
            name, data = None, []
        elif line.startswith(":"):
            continue  # a comment: keep-alive
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        events.append((name, "\n".join(data)))
    return events


def build(
    method: str,
    path: str,
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    body: bytes = b"",
    host: str | None = "127.0.0.1",
    length: bool = True,
) -> bytes:
    """The bytes of one request. Adds Host (unless None) and, for a body,
    Content-Length (unless `length` is False or headers name one)."""
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    names = {k.lower() for k, _ in pairs}
    if host is not None and "host" not in names:
        pairs.insert(0, ("Host", host))
    if length and body and not names & {"content-length", "transfer-encoding"}:
        pairs.append(("Content-Length", str(len(body))))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in pairs)
    return head.encode("latin-1") + b"\r\n" + body


class Connection:
    """A client socket with a read buffer, so bytes after one response are
    kept for the next: a second answer to one request cannot hide."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 30.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self.deadline: float | None = None  # monotonic; no read waits past it
        self.buffer = b""
        self.eof = False

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes) -> bool:
        """Send all of `data`; False if the server had already closed."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:  # EPIPE, ECONNRESET
            self.eof = True
            return False

    def _recv(self, timeout: float | None = None) -> bool:
        """Read what is there into the buffer; False at EOF or reset."""
        if self.eof:
            return False
        timeout = self.timeout if timeout is None else timeout
        if self.deadline is not None:
            timeout = min(timeout, self.deadline - time.monotonic())
            if timeout <= 0:
                raise TimeoutError("past the connection's deadline")
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    def _poll(self, seconds: float) -> str:
        try:
            return "data" if self._recv(max(seconds, 0.001)) else "closed"
        except TimeoutError:
            return "open"

    def wait(self, seconds: float) -> str:
        """What the server does within `seconds`: "data" (bytes arrived, kept
        in the buffer), "closed" (EOF or reset) or "open" (nothing)."""
        return "data" if self.buffer else self._poll(seconds)

    def closed_by(self, deadline: float) -> bool:
        """True if the server closes the connection before monotonic
        `deadline`; what it sends first (a 408, say) is kept in the buffer."""
        while not self.eof and time.monotonic() < deadline and len(self.buffer) <= MAX_HEAD:
            self._poll(deadline - time.monotonic())
        return self.eof

    def _read_line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if len(self.buffer) > MAX_HEAD or not self._recv():
                raise PeerClosed(f"connection ended mid-line after {self.buffer[:200]!r}")
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def _read_exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if not self._recv():
                raise PeerClosed(f"connection ended with {len(self.buffer)} of {n} bytes")
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def read_head(self) -> Response:
        """Status line and headers. Raises PeerClosed if the server closed
        the connection first (no answer at all)."""
        while b"\r\n\r\n" not in self.buffer:
            if len(self.buffer) > MAX_HEAD:
                raise PeerClosed(f"no end of headers in {len(self.buffer)} bytes")
            if not self._recv():
                raise PeerClosed(f"connection ended before a response: {self.buffer[:200]!r}")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/") or not code.isdigit():
            raise PeerClosed(f"not an HTTP response: {lines[0]!r}")
        headers = [
            (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])
        ]
        reply = Response(int(code), reason, headers)
        reply.chunked = "chunked" in (reply.header("Transfer-Encoding") or "").lower()
        if reply.header("Content-Length") is not None:
            reply.length = int(reply.header("Content-Length"))
        return reply

    def read_chunk(self, reply: Response) -> bytes | None:
        """The next chunk of a chunked body (appended to reply.body), or None
        after the last one. Raises PeerClosed if the connection ends first."""
        size_line = self._read_line()
        size = int(size_line.split(b";", 1)[0].strip() or b"x", 16)
        if size == 0:
            while self._read_line():  # trailers, then the blank line
                pass
            reply.complete = True
            return None
        data = self._read_exact(size)
        if self._read_exact(2) != b"\r\n":
            raise PeerClosed("a chunk did not end with CRLF")
        reply.body += data
        return data

    def read_body(self, reply: Response, head_request: bool = False) -> Response:
        """The rest of `reply`'s body by its framing. A HEAD reply, 1xx, 204
        and 304 have none, whatever their headers say."""
        if head_request or reply.status in (204, 304) or reply.status < 200:
            reply.complete = True
        elif reply.chunked:
            try:
                while self.read_chunk(reply) is not None:
                    pass
            except PeerClosed:
                reply.complete = False
        elif reply.length is not None:
            try:
                reply.body += self._read_exact(reply.length)
                reply.complete = True
            except PeerClosed:
                reply.body += self.buffer
                self.buffer = b""
        else:  # no framing: the body runs to the close
            while self._recv():
                pass
            reply.body, self.buffer = self.buffer, b""
            reply.complete = True
        return reply

    def read_response(self, head_request: bool = False) -> Response:
        return self.read_body(self.read_head(), head_request)

    def request(
        self,
        method: str,
        path: str,
        headers=None,
        body: bytes = b"",
        host: str | None = "127.0.0.1",
    ) -> Response:
        """Send one request and read its response."""
        if not self.send(build(method, path, headers, body, host)):
            raise PeerClosed("the server closed the connection before the request went out")
        return self.read_response(head_request=method == "HEAD")


def exchange(port: int, data: bytes, timeout: float = 30.0, head_request: bool = False) -> Response:
    """Send `data` on a new connection and read one response."""
    with Connection(port, timeout=timeout) as conn:
        conn.send(data)
        return conn.read_response(head_request)
