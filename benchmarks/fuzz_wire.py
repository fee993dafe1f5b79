"""The fuzzer's side of the wire (benchmarks/fuzz_server.py): send a Case
over a raw socket, read what comes back by its framing, and judge it. Stdlib
only; no client library would send these requests or notice a second,
smuggled answer.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass

import fuzz_cases as fc

REPLY_TIMEOUT = 120  # seconds, in all, a well-formed request may take to be answered
SETTLE = 0.1  # seconds to wait for a second (smuggled) answer after a framing case


class NoAnswer(Exception):
    """The connection ended before a whole response."""


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    complete: bool


class Wire:
    """One client socket and the bytes read from it but not yet used."""

    def __init__(self, addr: tuple[str, int], seconds: float):
        # A deadline for the whole exchange, not per read: a stream's
        # keep-alives would otherwise hold a long generation open for ever.
        self.deadline = time.monotonic() + seconds
        self.sock = socket.create_connection(addr, timeout=seconds)
        self.buf = b""
        self.eof = False

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def fill(self, timeout: float | None = None) -> bool:
        if self.eof:
            return False
        wait = self.deadline - time.monotonic()
        if timeout is not None:
            wait = min(wait, max(timeout, 0.001))
        if wait <= 0:
            raise TimeoutError("past the exchange's deadline")
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
            data = b""
        if not data:
            self.eof = True
        self.buf += data
        return bool(data)

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self.fill():
                raise NoAnswer("body cut short")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self.fill():
                raise NoAnswer("stream cut short")
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self, head_request: bool = False) -> Reply:
        """One response; NoAnswer if the server closed before its headers."""
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > 1 << 20 or not self.fill():
                raise NoAnswer("closed without an answer")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise NoAnswer(f"not an HTTP status line: {lines[0][:80]!r}")
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
        }
        reply = Reply(int(parts[1]), headers, b"", True)
        if head_request or reply.status in (204, 304) or reply.status < 200:
            return reply
        try:
            if "chunked" in headers.get("transfer-encoding", "").lower():
                while (size := int(self._line().split(b";")[0] or b"0", 16)) > 0:
                    reply.body += self._take(size)
                    self._take(2)
                while self._line():
                    pass
            elif "content-length" in headers:
                reply.body = self._take(int(headers["content-length"]))
            else:
                while self.fill():
                    pass
                reply.body, self.buf = self.buf, b""
        except (NoAnswer, ValueError):
            reply.complete = False
        return reply


def error_shaped(path: str, body: bytes) -> bool:
    """The body is an error in the path's API shape."""
    try:
        obj = json.loads(body)
    except ValueError:
        return False
    if not isinstance(obj, dict):
        return False
    if path.startswith("/v1/messages"):
        err = obj.get("error")
        return (
            obj.get("type") == "error"
            and isinstance(err, dict)
            and isinstance(err.get("type"), str)
            and isinstance(err.get("message"), str)
        )
    err = obj.get("error")
    return isinstance(err, dict) and {"message", "type", "param", "code"} <= set(err)


def stream_failed(body: bytes) -> bool:
    """An SSE body that carries an API's terminal error event."""
    text = body.decode("utf-8", "replace")
    return 'data: {"error"' in text or "event: error" in text or "event: response.failed" in text


@dataclass
class Outcome:
    case: fc.Case
    status: int | None = None
    dropped: bool = False  # well-formed HTTP left without a whole answer
    extra: bool = False  # a second answer to one request (desync)
    unshaped: bool = False
    stream_error: bool = False
    cut: bool | None = None  # slow clients: the server closed them
    note: str = ""


def run_case(
    addr: tuple[str, int], case: fc.Case, slow_seconds: float, reply_seconds: float = REPLY_TIMEOUT
) -> Outcome:
    """Send `case` on a new connection and judge what comes back."""
    out = Outcome(case)
    try:
        wire = Wire(addr, reply_seconds)
    except OSError as e:
        out.dropped, out.note = True, f"connect: {e}"
        return out
    try:
        if case.slow:
            _slow(wire, case, out, slow_seconds)
        else:
            _fast(wire, case, out)
    except TimeoutError:
        out.dropped = case.well_formed
        out.note = f"no whole answer in {reply_seconds:g} s"
    finally:
        wire.close()
    return out


def _judge(reply: Reply, case: fc.Case, out: Outcome) -> None:
    out.status = reply.status
    if not reply.complete:
        out.dropped = case.well_formed
        out.note = "answer cut short"
    if reply.status >= 400 and not case.head and case.path:
        out.unshaped = not error_shaped(case.path, reply.body)
    if reply.status == 200 and "text/event-stream" in reply.headers.get("content-type", ""):
        out.stream_error = stream_failed(reply.body)
    if out.unshaped or out.stream_error or reply.status >= 500:
        out.note = out.note or reply.body[:200].decode("utf-8", "replace")


def _fast(wire: Wire, case: fc.Case, out: Outcome) -> None:
    sent = wire.send(case.data)
    try:
        reply = wire.reply(case.head)
    except NoAnswer as e:
        out.dropped = case.well_formed
        out.note = f"{e} (request {'sent' if sent else 'not fully sent'})"
        return
    _judge(reply, case, out)
    if case.kind == "framing" and reply.complete and not wire.buf:
        try:
            wire.fill(SETTLE)
        except TimeoutError:
            pass
    if wire.buf.startswith(b"HTTP/"):
        out.extra = True
        out.note = f"second answer: {wire.buf[:120]!r}"


def _slow(wire: Wire, case: fc.Case, out: Outcome, slow_seconds: float) -> None:
    give_up = time.monotonic() + slow_seconds
    if case.slow == "drip":
        for i in range(len(case.data)):
            if wire.eof or not wire.send(case.data[i : i + 1]):
                break
            try:
                wire.fill(0.5)  # one byte every half second, reading what comes
            except TimeoutError:
                pass
            if time.monotonic() > give_up:
                break
    else:
        wire.send(case.data)
    while not wire.eof and time.monotonic() < give_up:
        try:
            wire.fill(give_up - time.monotonic())
        except TimeoutError:
            break
    out.cut = wire.eof
    if wire.buf.startswith(b"HTTP/"):
        wire.eof = False
        try:
            _judge(wire.reply(), case, out)
        except NoAnswer:
            pass
