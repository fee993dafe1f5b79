#!/usr/bin/env python3
"""A hostile neighbour for the HTTP boundary: thousands of malformed and
abusive requests, then the verdict on what the server did with them.

    .venv/bin/python benchmarks/fuzz_server.py                    # its own demo server
    .venv/bin/python benchmarks/fuzz_server.py --requests 500 --json
    .venv/bin/python benchmarks/fuzz_server.py --base-url http://127.0.0.1:8000 --server-pid PID

It sends JSON mutations of real client bodies (benchmarks/fuzz_cases.py),
HTTP framing abuse over raw sockets and slow clients; every --check-every
requests it checks /health and one normal chat request. It exits 1 unless:
no response >= 500 (529 overloaded excepted) and no error event mid-stream,
no well-formed request left without a whole answer, no second answer to one
request, no poisoned-engine episode, every error body in its API's shape,
and server RSS growth <= 20 %. Loopback servers only; bounded by
--requests and --max-seconds. Stdlib only (the project package starts the
demo server).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]

import fuzz_cases as fc  # noqa: E402
from fuzz_report import Tally, print_report, report  # noqa: E402
from fuzz_wire import REPLY_TIMEOUT, NoAnswer, Outcome, Wire, run_case  # noqa: E402
from live_server import LiveServer  # noqa: E402

# The demo server's settings: a small context so a mutated max_tokens stays
# cheap, short deadlines so slow clients are cut quickly, room for the pool.
SERVER_FLAGS = ["--max-tokens", "1536", "--request-timeout", "2", "--max-pending", "64"]


# --- the server --------------------------------------------------------------------


class DemoServer(LiveServer):
    """./start-server.sh --model demo on a free port in a scratch home, test hooks on."""

    def __init__(self):
        super().__init__("demo", Path(tempfile.mkdtemp(prefix="fuzz-server-")), SERVER_FLAGS)

    def stop(self, keep: bool = False) -> None:
        super().stop()
        if not keep:
            shutil.rmtree(self.home, ignore_errors=True)


class External:
    def __init__(self, port: int, pid: int):
        self.port, self.pid, self.home = port, pid, None

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True

    def stop(self, keep: bool = False) -> None:
        pass


def rss_bytes(pid: int) -> int | None:
    """Resident memory of `pid`: /proc on Linux, ps elsewhere (macOS)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        out = subprocess.run(
            ["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True, timeout=10
        )
        return int(out.stdout.strip()) * 1024
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def loopback_port(base_url: str) -> int:
    """The port of a loopback base URL; exits 2 for anything else."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    try:
        loop = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loop = False
    if parts.scheme != "http" or not loop or not parts.port:
        print(
            f"error: --base-url {base_url!r} is not http://127.0.0.1:PORT (or [::1], localhost); "
            "this fuzzer only attacks a server on this machine.",
            file=sys.stderr,
        )
        sys.exit(2)
    return parts.port


# --- the run -------------------------------------------------------------------------


def check(addr: tuple[str, int], host: str, seconds: float = REPLY_TIMEOUT) -> str | None:
    """None if /health is ok and a normal chat request is answered, else what is wrong."""
    try:
        for data, want in (
            (fc.request("GET", "/health", host), "status"),
            (fc.json_request(fc.CHAT, host, fc.encode(fc.NORMAL[1])), "choices"),
        ):
            wire = Wire(addr, seconds)
            try:
                wire.send(data)
                reply = wire.reply()
            finally:
                wire.close()
            body = json.loads(reply.body) if reply.body else {}
            if reply.status != 200 or not body.get(want) or body.get("status", "ok") != "ok":
                return f"{data.split(b' ')[1].decode()} -> {reply.status} {reply.body[:200]!r}"
    except (OSError, NoAnswer, ValueError) as e:  # TimeoutError is an OSError
        return f"{type(e).__name__}: {e}"
    return None


def check_seeds(addr: tuple[str, int], host: str) -> list[str]:
    """The unmutated client bodies must be served, or the mutations test nothing."""
    problems = []
    for name, (path, body) in fc.SEEDS.items():
        out = run_case(
            addr, fc.Case("json", name, fc.json_request(path, host, fc.encode(body)), path, True), 0
        )
        if out.status != 200 or out.dropped or out.stream_error:
            problems.append(f"{name}: {out.status} {out.note[:200]}")
    return problems


def fuzz(args, addr: tuple[str, int], host: str, server, tally: Tally, deadline: float) -> None:
    """Send batches of --check-every cases, checking the server after each.
    RSS is first read after the warm-up cases and the first batch (the
    allocator's and mlx's pools grow to the largest bodies once)."""
    stream = fc.cases(random.Random(args.seed), host)

    def in_time(case: fc.Case) -> Outcome | None:
        if time.monotonic() >= deadline:
            return None  # --max-seconds is up: the batch drains without it
        return run_case(addr, case, args.slow_seconds, args.reply_seconds)

    with ThreadPoolExecutor(args.concurrency) as pool:
        # Twice, at the run's concurrency: the server's threads keep allocator arenas of their own.
        list(pool.map(in_time, fc.warmup_cases(host) * 2))
        while tally.sent < args.requests and time.monotonic() < deadline:
            batch = [next(stream) for _ in range(min(args.check_every, args.requests - tally.sent))]
            for out in pool.map(in_time, batch):
                if out is not None:
                    tally.add(out)
            if not server.alive():
                tally.server_died = True
                return
            tally.add_check(check(addr, host, args.reply_seconds))
            if tally.rss_warm is None:
                tally.rss_warm = rss_bytes(server.pid)


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Without --base-url it starts its own demo server: ./start-server.sh "
        "--model demo " + " ".join(SERVER_FLAGS) + ", test hooks on.",
    )
    p.add_argument("--requests", type=int, default=10_000, help="requests to send (default 10000)")
    p.add_argument(
        "--check-every",
        type=int,
        default=250,
        help="requests between health + normal-request checks (default 250)",
    )
    p.add_argument(
        "--max-seconds", type=float, default=900, help="stop after this long (default 900)"
    )
    p.add_argument(
        "--concurrency", type=int, default=8, help="requests in flight at once (default 8)"
    )
    p.add_argument(
        "--slow-seconds",
        type=float,
        default=6.0,
        help="how long a slow client keeps trying before it gives up (default 6)",
    )
    p.add_argument(
        "--reply-seconds",
        type=float,
        default=REPLY_TIMEOUT,
        help="how long a well-formed request may take, in all, before it counts as "
        f"unanswered (default {REPLY_TIMEOUT}); keep the target's context small",
    )
    p.add_argument(
        "--seed", type=int, default=None, help="random seed, to repeat a run (default: random)"
    )
    p.add_argument(
        "--base-url",
        help="fuzz this running server instead (loopback only), e.g. "
        "http://127.0.0.1:8000; needs --server-pid",
    )
    p.add_argument("--server-pid", type=int, help="pid of the --base-url server, for its RSS")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    if args.base_url and args.server_pid is None:
        p.error("--base-url needs --server-pid (the server's RSS is one of the criteria)")
    if min(args.requests, args.check_every, args.concurrency) < 1:
        p.error("--requests, --check-every and --concurrency must be at least 1")
    if args.seed is None:
        args.seed = random.randrange(1 << 32)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.base_url:
        port = loopback_port(args.base_url)
        host = urlsplit(args.base_url).hostname
        server = External(port, args.server_pid)
    else:
        host, server = "127.0.0.1", DemoServer()
    addr = (host, server.port)
    host_header = f"[{host}]:{server.port}" if ":" in host else f"{host}:{server.port}"
    tally, ok = Tally(), False
    started = time.monotonic()
    try:
        seeds = check_seeds(addr, host_header)
        tally.rss_start = rss_bytes(server.pid)
        if not seeds:
            fuzz(args, addr, host_header, server, tally, started + args.max_seconds)
        after = rss_bytes(server.pid) if server.alive() else None
        r = report(
            tally,
            (tally.rss_warm, after),
            seeds,
            time.monotonic() - started,
            args.seed,
            f"http://{host_header} (pid {server.pid})",
        )
        ok = all(c["ok"] for c in r["criteria"])
    finally:
        server.stop(keep=not ok)
    if server.home is not None and not ok:
        r["server_home"] = str(server.home)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print_report(r)
        if r.get("server_home"):
            print(f"server home and log kept in {r['server_home']}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
