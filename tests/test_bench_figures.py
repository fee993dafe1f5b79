"""The figures bench_concurrency.py computes from streamed replies (its
numbers are printed, never asserted; these check the arithmetic)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from bench_concurrency import aggregate_tps, together_tps
from live_server import Stream


def _stream(first: float, last: float, tokens: int | None = None) -> Stream:
    deltas = [float(t) for t in range(int(first), int(last) + 1)]  # one delta a second
    return Stream(0.0, first, last, tokens or len(deltas), 10, deltas)


def test_tokens_between_counts_deltas_scaled_to_the_token_count():
    s = _stream(1, 5, tokens=9)  # 5 deltas carry 9 tokens: 2 tokens a delta after the first
    assert s.tokens_between(1, 5) == 8
    assert s.tokens_between(3, 4) == 2
    assert s.tokens_between(6, 9) == 0


def test_all_decoding_is_the_window_when_every_stream_decodes():
    a, b = _stream(1, 5), _stream(3, 7)
    assert together_tps([a, b]) == 4 / 2  # (3, 5]: two tokens each in two seconds
    assert together_tps([a]) == a.decode_tps == 1.0


def test_streams_one_after_another_never_all_decode():
    a, b = _stream(1, 3), _stream(4, 6)
    assert math.isnan(together_tps([a, b]))
    assert aggregate_tps([a, b]) == 4 / 4  # the union of spans: one stream's speed
