"""The KV-cache fallback: mlx 0.32.4 on CUDA fails quantized attention
(`quantized_matmul: No implementation for problem shape`), so the engine
probes the backend once and serves with full-precision KV when the probe
fails, saying so in one warning (see KV_CACHE_QUANTIZATION.md)."""

from __future__ import annotations

import logging

import pytest

from mlx_native_server.adapter import kv
from mlx_native_server.core import config
from mlx_native_server.core.paths import Paths
from mlx_native_server.engine import engine


def _settings(home, model, **flags):
    paths = Paths(home=home, config_file=home / "server.toml", log_dir=home / "logs")
    return config.load({"model": str(model), **flags}, {}, paths)


@pytest.fixture
def probe(monkeypatch):
    """A stand-in backend probe that records its calls and answers `result`."""

    class Probe:
        def __init__(self):
            self.result = True
            self.calls: list[tuple[int, int, int]] = []

        def __call__(self, bits, group_size, head_dim):
            self.calls.append((bits, group_size, head_dim))
            return self.result

    fake = Probe()
    monkeypatch.setattr(engine, "kv_quantization_works", fake)  # the name the engine calls
    return fake


def _warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "mlx_native_server.engine.engine" and r.levelno == logging.WARNING
    ]


def test_backend_without_kv_quantization_serves_full_precision_with_one_warning(
    tmp_path, demo_model, probe, caplog
):
    probe.result = False
    settings = _settings(tmp_path, demo_model, kv_bits="4")

    with caplog.at_level(logging.WARNING, logger="mlx_native_server.engine.engine"):
        chosen = engine.Engine._choose_kv_bits(settings)

    assert chosen is None
    assert probe.calls == [(4, 64, 64)]  # the demo model's head_dim, the default group size
    (warning,) = _warnings(caplog)
    assert "cannot quantize the KV cache at 4 bits" in warning
    assert "full-precision KV" in warning and "kv_bits = 0" in warning


def test_backend_with_kv_quantization_keeps_the_configured_bits(
    tmp_path, demo_model, probe, caplog
):
    settings = _settings(tmp_path, demo_model, kv_bits="8", kv_group_size="32")

    with caplog.at_level(logging.WARNING, logger="mlx_native_server.engine.engine"):
        chosen = engine.Engine._choose_kv_bits(settings)

    assert chosen == 8
    assert probe.calls == [(8, 32, 64)]
    assert _warnings(caplog) == []


def test_kv_bits_zero_skips_the_probe_and_warns_nothing(tmp_path, demo_model, probe, caplog):
    settings = _settings(tmp_path, demo_model, kv_bits="0")

    with caplog.at_level(logging.WARNING, logger="mlx_native_server.engine.engine"):
        chosen = engine.Engine._choose_kv_bits(settings)

    assert chosen is None
    assert probe.calls == []
    assert _warnings(caplog) == []


@pytest.mark.parametrize("bits,head_dim", [(4, 64), (8, 64), (4, 128)])
def test_kv_quantization_works_on_the_cpu_backend(bits, head_dim):
    assert kv.kv_quantization_works(bits, 64, head_dim) is True
