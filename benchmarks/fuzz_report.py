"""The fuzzer's verdict (benchmarks/fuzz_server.py): what it counts, the
"done" criteria, and the report as text or JSON. Stdlib only.
"""

from __future__ import annotations

import collections

from fuzz_wire import Outcome

MAX_RSS_GROWTH = 20.0  # per cent, from after the warm-up batch to the end
EXAMPLES = 5  # failure examples kept per kind


class Tally:
    """Everything the report counts."""

    def __init__(self):
        self.sent = 0
        self.statuses: collections.Counter = collections.Counter()
        self.kinds: collections.Counter = collections.Counter()
        self.failures: dict[str, list[Outcome]] = collections.defaultdict(list)
        self.failure_counts: collections.Counter = collections.Counter()
        self.unshaped_malformed = 0
        self.slow = self.slow_cut = 0
        self.checks = self.failed_checks = self.episodes = 0
        self.check_notes: list[str] = []
        self.server_died = False
        self.rss_start: int | None = None  # before any fuzzing
        self.rss_warm: int | None = None  # after the first batch

    def fail(self, kind: str, out: Outcome) -> None:
        self.failure_counts[kind] += 1
        if len(self.failures[kind]) < EXAMPLES:
            self.failures[kind].append(out)

    def add(self, out: Outcome) -> None:
        self.sent += 1
        self.kinds[out.case.kind] += 1
        self.statuses[str(out.status) if out.status is not None else "no answer"] += 1
        if (out.status or 0) >= 500 and out.status != 529 or out.stream_error:
            self.fail("server_error", out)
        if out.dropped:
            self.fail("dropped", out)
        if out.extra:
            self.fail("desync", out)
        if out.unshaped and out.case.well_formed:
            self.fail("unshaped", out)
        elif out.unshaped:
            self.unshaped_malformed += 1
        if out.case.slow:
            self.slow += 1
            self.slow_cut += bool(out.cut)

    def add_check(self, problem: str | None) -> None:
        self.checks += 1
        if problem is not None:
            self.episodes += not self.check_notes or self.check_notes[-1] == "ok"
            self.failed_checks += 1
        self.check_notes.append("ok" if problem is None else problem)


def criteria(tally: Tally, rss: tuple, seeds: list[str]) -> list[tuple[str, bool, str]]:
    before, after = rss
    growth = (after - before) * 100.0 / before if before and after else None
    c = tally.failure_counts
    return [
        ("the unmutated client bodies are served", not seeds, "; ".join(seeds)),
        ("the server stayed up", not tally.server_died, ""),
        (
            "0 responses >= 500 (529 excepted) or error events mid-stream",
            c["server_error"] == 0,
            str(c["server_error"]),
        ),
        ("0 well-formed requests without a whole answer", c["dropped"] == 0, str(c["dropped"])),
        ("0 second answers to one request (desync)", c["desync"] == 0, str(c["desync"])),
        ("0 poisoned-engine episodes", tally.episodes == 0, str(tally.episodes)),
        ("every error body in its API's shape", c["unshaped"] == 0, str(c["unshaped"])),
        (
            f"server RSS growth <= {MAX_RSS_GROWTH:.0f} %",
            growth is not None and growth <= MAX_RSS_GROWTH,
            "not measured" if growth is None else f"{growth:+.1f} %",
        ),
    ]


def report(
    tally: Tally, rss: tuple, seeds: list[str], elapsed: float, seed: int, where: str
) -> dict:
    before, after = rss
    return {
        "target": where,
        "seed": seed,
        "elapsed_seconds": round(elapsed, 1),
        "requests": tally.sent,
        "by_kind": dict(tally.kinds),
        "status_codes": dict(sorted(tally.statuses.items())),
        "responses_5xx": sum(n for s, n in tally.statuses.items() if s.isdigit() and int(s) >= 500),
        "server_errors": tally.failure_counts["server_error"],
        "no_response_well_formed": tally.failure_counts["dropped"],
        "desync": tally.failure_counts["desync"],
        "unshaped_error_bodies": tally.failure_counts["unshaped"],
        "unshaped_error_bodies_malformed_http": tally.unshaped_malformed,
        "slow_clients": tally.slow,
        "slow_clients_cut_by_server": tally.slow_cut,
        "checks": tally.checks,
        "failed_checks": tally.failed_checks,
        "poisoned_episodes": tally.episodes,
        "rss_start_bytes": tally.rss_start,
        "rss_before_bytes": before,
        "rss_after_bytes": after,
        "rss_growth_percent": round((after - before) * 100.0 / before, 1)
        if before and after
        else None,
        "criteria": [
            {"name": n, "ok": ok, "detail": d} for n, ok, d in criteria(tally, rss, seeds)
        ],
        "examples": {
            kind: [{"case": o.case.name, "status": o.status, "note": o.note[:300]} for o in outs]
            for kind, outs in tally.failures.items()
        },
        "first_failed_check": next((n for n in tally.check_notes if n != "ok"), None),
    }


def print_report(r: dict) -> None:
    mib = lambda b: "?" if b is None else f"{b / 2**20:.1f} MiB"  # noqa: E731
    print(
        f"fuzz_server: {r['requests']} requests in {r['elapsed_seconds']} s against {r['target']} "
        f"(seed {r['seed']}; {', '.join(f'{k} {n}' for k, n in sorted(r['by_kind'].items()))})"
    )
    print("status codes:  " + "  ".join(f"{s}: {n}" for s, n in r["status_codes"].items()))
    print(
        f"responses >= 500:                      {r['responses_5xx']}; as faults (529 excepted, "
        f"error events mid-stream added): {r['server_errors']}"
    )
    print(f"no answer to well-formed HTTP:         {r['no_response_well_formed']}")
    print(f"second answers to one request:         {r['desync']}")
    print(
        f"poisoned-engine episodes:              {r['poisoned_episodes']} "
        f"({r['failed_checks']} of {r['checks']} checks failed)"
    )
    print(
        f"error bodies not in their API's shape: {r['unshaped_error_bodies']} "
        f"(+{r['unshaped_error_bodies_malformed_http']} to malformed HTTP, not counted)"
    )
    print(
        f"slow clients:                          {r['slow_clients']} "
        f"({r['slow_clients_cut_by_server']} cut by the server)"
    )
    growth = r["rss_growth_percent"]
    print(
        f"server RSS:                            {mib(r['rss_before_bytes'])} after the first batch -> "
        f"{mib(r['rss_after_bytes'])} at the end ({'?' if growth is None else f'{growth:+.1f} %'}; "
        f"{mib(r['rss_start_bytes'])} before any fuzzing)"
    )
    for kind, examples in r["examples"].items():
        print(f"  {kind}, e.g.:")
        for e in examples:
            print(f"    {e['case'][:70]:<70} {e['status']}  {e['note'][:120]!r}")
    if r["first_failed_check"]:
        print(f"  first failed check: {r['first_failed_check'][:200]}")
    print("done criteria:")
    for c in r["criteria"]:
        print(
            f"  [{'PASS' if c['ok'] else 'FAIL'}] {c['name']}"
            + (f": {c['detail']}" if c["detail"] else "")
        )
