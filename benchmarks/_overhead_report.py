"""The output of bench_overhead.py: the medians table (this server against
direct and the goals, then the baseline server with --baseline-repo), the
warning when direct's decode figures are invalid, and --json."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import mlx.core as mx

GOAL_RATIO = 0.98  # server decode tok/s over direct
GOAL_TTFT_MS = 20.0  # server TTFT minus direct TTFT
# Forward work still lazy after a reply, beyond the one step generate_step
# runs ahead, means the forced logits cut the model out of the graph.
LAZY_MS, LAZY_TOKENS = 5.0, 3
SERVERS = ("server", "baseline")  # the sides that are servers, in column order


def print_table(results: list[dict]) -> None:
    """Medians per model: direct, this server against direct (and the goals),
    then with --baseline-repo the baseline server against direct."""
    baseline = "baseline" in results[0]["med"]
    print(f"\n{mx.default_device()}, medians:")
    head = (
        f"{'model':<28} {'kv (server flag)':<28} {'tokens':>6} {'direct tok/s':>12} "
        f"{'server tok/s':>12} {'ratio':>6} {'direct TTFT':>11} {'server TTFT':>11} "
        f"{'overhead':>9}"
    )
    if baseline:
        head += f" {'baseline tok/s':>14} {'ratio':>6} {'baseline TTFT':>13} {'overhead':>9}"
    print(head)
    print("-" * len(head))
    for r in results:
        (dt, dl), (st, sl) = r["med"]["direct"], r["med"]["server"]
        ratio, over = st / dt, sl - dl
        kv = r["kv"] + (" (fallback)" if r["fell_back"]["server"] else "")
        line = (
            f"{r['label']:<28} {kv:<28} {r['tokens']:>6} {dt:>12.1f} {st:>12.1f} "
            f"{ratio:>6.3f} {dl:>8.1f} ms {sl:>8.1f} ms {over:>+6.1f} ms"
        )
        if baseline:
            bt, bl = r["med"]["baseline"]
            line += f" {bt:>14.1f} {bt / dt:>6.3f} {bl:>10.1f} ms {bl - dl:>+6.1f} ms"
        print(
            f"{line}  [ratio {'ok' if ratio >= GOAL_RATIO else 'below'} {GOAL_RATIO}, "
            f"TTFT {'ok' if over <= GOAL_TTFT_MS else 'over'} {GOAL_TTFT_MS:.0f} ms]"
        )
    for r in results:
        if baseline and r["fell_back"]["baseline"] != r["fell_back"]["server"]:
            did = "fell back to" if r["fell_back"]["baseline"] else "kept"
            print(f"  [{r['label']}] the baseline server {did} full-precision KV, unlike this one")
    print_lazy(results)


def print_lazy(results: list[dict]) -> None:
    """The warning that direct's decode figures are invalid, where they are."""
    lazy = [
        f"{r['label']}: {r['deferred_ms']:.0f} ms"
        for r in results
        if r["deferred_ms"] > max(LAZY_MS, LAZY_TOKENS * 1e3 / r["med"]["direct"][0])
    ]
    if lazy:
        print(
            f"\nINVALID DECODE FIGURES: after each forced reply the model's forward pass "
            f"was still unevaluated ({'; '.join(lazy)}). The test hook's forced logits do "
            "not depend on the model's, so decoding skipped the model and the next reader "
            "of the KV cache pays for it. Fix: engine/hooks.py _ScriptProcessor returns "
            "mx.depends(forced_logits, logits)."
        )


def write_json(path: Path, results: list[dict], args) -> None:
    """Per model: the medians per side (with each server's ratio to direct and
    TTFT overhead) and every round's order and samples; the settings used."""
    models = []
    for r in results:
        dt, dl = r["med"]["direct"]
        medians = {
            side: {"decode_tps": tps, "ttft_ms": ttft} for side, (tps, ttft) in r["med"].items()
        }
        for side in SERVERS:
            if side in medians:
                m = medians[side]
                m.update(ratio=m["decode_tps"] / dt, ttft_overhead_ms=m["ttft_ms"] - dl)
        rounds = [
            {"order": rd["order"], **{side: asdict(rd[side]) for side in rd["order"]}}
            for rd in r["rounds"]
        ]
        keep = ("label", "kv", "effective_kv", "fell_back", "tokens", "deferred_ms")
        models.append({**{k: r[k] for k in keep}, "medians": medians, "rounds": rounds})
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    out = {"device": str(mx.default_device()), "settings": settings, "models": models}
    path.write_text(json.dumps(out, indent=1))
