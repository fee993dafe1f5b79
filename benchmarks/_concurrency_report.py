"""The tables of bench_concurrency.py: medians over rounds, one column per
server, the ratio of the two, and the goal each figure is measured against
(printed, never judged)."""

from __future__ import annotations

import statistics

STREAMS = (1, 2, 4)  # concurrent decode streams


def _med(rounds: list[dict], key: str, of=lambda v: v) -> float:
    return statistics.median(of(r[key]) for r in rounds)


def _med_ratio(rounds: list[dict], n: int, key: str = "agg_tps") -> float:
    """Median over rounds of each round's `key` figure at n streams over 1."""
    return statistics.median(r[f"{key}_{n}"] / r[f"{key}_1"] for r in rounds)


def _streams(n: int) -> str:
    return "1 stream" if n == 1 else f"{n} streams"


def summary(scenario: str, rounds: list[dict]) -> list[tuple[str, float, str]]:
    """(figure, median over rounds, goal) rows of one scenario on one side."""
    if scenario == "decode":
        agg = {n: _med(rounds, f"agg_tps_{n}") for n in STREAMS}
        rows = [(f"aggregate tok/s, {_streams(n)}", agg[n], "") for n in STREAMS]
        rows += [
            (f"aggregate {n} streams / 1", _med_ratio(rounds, n), "> 1.3" if n == 2 else "")
            for n in STREAMS[1:]
        ]
        rows += [
            (f"all decoding: tok/s, {_streams(n)}", _med(rounds, f"all_tps_{n}"), "")
            for n in STREAMS
        ]
        rows += [
            (
                f"all decoding: {n} streams / 1",
                _med_ratio(rounds, n, "all_tps"),
                "> 1.3" if n == 2 else "",
            )
            for n in STREAMS[1:]
        ]
        rows += [
            (f"engine's decode steps: tok/s, {_streams(n)}", _med(rounds, f"engine_tps_{n}"), "")
            for n in STREAMS
        ]
        rows += [
            (
                f"per-stream tok/s, {n} streams",
                _med(rounds, f"stream_tps_{n}", statistics.median),
                "",
            )
            for n in STREAMS[1:]
        ]
        return rows + [
            (f"slowest TTFT s, {_streams(n)}", _med(rounds, f"ttft_max_{n}"), "") for n in STREAMS
        ]
    if scenario == "prefill":
        return [
            ("solo TTFT s, A + B", _med(rounds, "solo_ttft", sum), ""),
            ("together: last first token s", _med(rounds, "together_total"), ""),
            ("together / sum of solo", _med(rounds, "total_over_solo_sum"), "<= 1.1"),
        ]
    return [
        ("title TTFT s, alone", _med(rounds, "solo_ttft"), ""),
        ("title TTFT s, into a long generation", _med(rounds, "during_ttft"), ""),
        ("difference s", _med(rounds, "difference"), "<= +0.5"),
    ]


def print_report(results: dict, args) -> None:
    """One table per scenario: a column per side (this checkout first, then
    --baseline-repo's) and, with two, their ratio."""
    labels = list(results)
    for scenario in args.scenarios:
        rounds = f"{args.rounds} round" + "s" * (args.rounds != 1)
        print(f"\n{scenario}: medians of {rounds} ({scenario_note(scenario, args)})")
        cols = {label: summary(scenario, results[label][scenario]) for label in labels}
        head = f"{'figure':<40}" + "".join(f"{label:>12}" for label in labels)
        head += (f"{'cur/base':>9}" if len(labels) == 2 else "") + "  goal"
        print(head + "\n" + "-" * len(head))
        for i, (figure, value, goal) in enumerate(cols[labels[0]]):
            values = [value] + [cols[label][i][1] for label in labels[1:]]
            line = f"{figure:<40}" + "".join(f"{v:>12.3f}" for v in values)
            if len(values) == 2:
                line += f"{values[0] / values[1]:>9.3f}"
            print(f"{line}  {goal}".rstrip())
        if scenario == "side":
            for label in labels:
                ended = sum(not r["long_still_running"] for r in results[label]["side"])
                if ended:
                    print(
                        f"  [{label}] in {ended} round(s) the long generation ended before "
                        "the title request: raise --long-tokens"
                    )


def scenario_note(scenario: str, args) -> str:
    if scenario == "decode":
        return (
            f"{args.tokens} {args.replies} tokens a stream, {'/'.join(map(str, STREAMS))} streams"
        )
    if scenario == "prefill":
        return f"two prompts of ~{args.prefill_tokens} tokens"
    return f"title sent {args.side_delay:g} s after the first of {args.long_tokens} tokens"
