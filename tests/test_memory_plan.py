"""The memory plan (KV_CACHE_QUANTIZATION.md, "Memory plan"): its arithmetic
against the formula and against bytes measured on the demo model, verdicts
for the default model on simulated Macs and a CUDA GPU, start refusing what
cannot fit, `--plan --json`, and the prompt cache spilling on request."""

from __future__ import annotations

import dataclasses
import json

import mlx.core as mx
import pytest

from conftest import small_kv
from mlx_native_server.cache.store import PromptCacheStore
from mlx_native_server.core import config
from mlx_native_server.core.errors import UserError
from mlx_native_server.core.paths import Paths
from mlx_native_server.memory import device as plan_cmd
from mlx_native_server.memory import footprint
from mlx_native_server.memory import plan as mp

GB, GiB = 10**9, 2**30

# MiniMax M2.1 REAP 50, 4-bit (the default model): REAP prunes experts, not attention.
REAP50 = {
    "model_type": "minimax",
    "num_hidden_layers": 62,
    "hidden_size": 3072,
    "num_attention_heads": 48,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "num_local_experts": 128,
    "num_experts_per_tok": 8,
    "intermediate_size": 1536,
    "vocab_size": 200064,
    "torch_dtype": "bfloat16",
    "quantization": {"group_size": 64, "bits": 4},
}
REAP50_WEIGHTS = 61 * GB
DEFAULTS = mp.Knobs(
    max_tokens=120000,
    kv_bits=4,
    kv_group_size=64,
    quantized_kv_start=5000,
    prompt_cache_bytes="auto",
    prompt_cache_size=8,
    prefill_step_size=2048,
)


def mac(ram_gib: int, wired_limit_mb: int = 0) -> mp.Device:
    """A Mac as mlx reports it: the GPU may wire about three quarters of RAM."""
    working_set = ram_gib * GiB * 3 // 4
    limit = wired_limit_mb * 2**20 or working_set
    return mp.Device("macos", ram_gib * GiB, limit, "this Mac lets the GPU use", working_set)


H200 = mp.Device("cuda", 150_754_820_096, 149_557_477_376, "free on the GPU (NVIDIA H200)")


def plan(device: mp.Device, **knobs) -> mp.Plan:
    return mp.make_plan(
        REAP50,
        REAP50_WEIGHTS,
        dataclasses.replace(DEFAULTS, **knobs),
        device,
        can_quantize_kv=device.platform != "cuda",
    )


# -- arithmetic ------------------------------------------------------------------


def test_kv_bytes_per_token_are_the_documented_table():
    shape = footprint.Shape.from_config(REAP50)
    assert footprint.kv_per_token(shape, 0, 64) == 253_952  # 2 x 62 x 8 x 128 values x 2 bytes
    assert footprint.kv_per_token(shape, 8, 64) == 134_912
    assert footprint.kv_per_token(shape, 4, 64) == 71_424


def test_kv_at_the_cap_is_quantized_and_rounded_to_the_cache_step():
    p = plan(mac(192))
    assert p.kv_at_cap == 120_064 * 71_424  # 120,000 tokens held in 256-token steps
    assert plan(mac(192), kv_bits=0).kv_at_cap == 120_064 * 253_952
    assert plan(mac(192), max_tokens=4000).kv_at_cap == 4096 * 253_952  # below quantized_kv_start


@pytest.fixture(scope="module")
def demo(demo_model):
    from mlx_lm import load

    model, _ = load(str(demo_model))
    return json.loads((demo_model / "config.json").read_text()), model


@pytest.mark.parametrize("bits", [0, 8, 4])
def test_kv_bytes_match_the_demo_models_cache(demo, bits):
    config_json, model = demo
    from mlx_lm.generate import maybe_quantize_kv_cache
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    model(mx.arange(1024)[None] % config_json["vocab_size"], cache=cache)
    maybe_quantize_kv_cache(cache, 0, 64, bits or None)
    mx.eval([c.state for c in cache])
    knobs = dataclasses.replace(DEFAULTS, max_tokens=1024, kv_bits=bits, quantized_kv_start=0)
    cpu = mp.Device("linux-cpu", 64 * GiB, 64 * GiB, "of RAM")
    assert mp.make_plan(config_json, 0, knobs, cpu).kv_at_cap == sum(c.nbytes for c in cache)


@pytest.mark.parametrize("step", [256, 1024])
def test_prefill_working_set_bounds_what_the_demo_model_uses(demo, step):
    """The formula is an upper bound fitted on measurements, not far above them."""
    config_json, model = demo
    from mlx_lm.models.cache import make_prompt_cache

    cache, tokens, used = make_prompt_cache(model), mx.arange(2048) % 1000, 0
    for i in range(0, 2048, step):
        mx.synchronize()
        mx.reset_peak_memory()
        model(tokens[i : i + step][None], cache=cache)
        mx.eval([c.state for c in cache])
        used = max(used, mx.get_peak_memory() - mx.get_active_memory())
    formula = footprint.prefill_bytes(
        footprint.Shape.from_config(config_json), step, 2048, scores=True
    )
    assert 0.7 * formula <= used <= formula


# -- verdicts for the default model ----------------------------------------------------


def test_64gb_mac_cannot_hold_the_weights_and_names_a_smaller_quantization():
    p = plan(mac(64))
    assert p.verdict == "cannot_fit"
    assert "A 3-bit conversion needs about 47.4 GB" in p.sentence and "--q-bits 3" in p.sentence


def test_96gb_mac_fits_only_with_smaller_settings_each_of_which_works():
    p = plan(mac(96))
    assert p.verdict == "fits_if"
    assert "max_tokens = " in p.sentence and "--prefill-step-size" in p.sentence
    assert not any("iogpu.wired_limit_mb" in f for f in p.fixes)  # 96 GB cannot wire enough
    for fix in p.fixes:
        assert plan(mac(96), **fix).verdict == "fits", fix


def test_128gb_mac_fits_just_with_a_smaller_automatic_prompt_cache():
    p = plan(mac(128))
    assert p.verdict == "fits" and p.total <= p.limit
    assert 1 * GiB <= p.prompt_cache < 16 * GiB
    assert p.wired_limit == p.limit  # start wires what the plan may use


def test_128gb_mac_with_a_fixed_16gib_prompt_cache_gets_the_sysctl_line():
    p = plan(mac(128), prompt_cache_bytes=16 * GiB)
    assert p.verdict == "fits_if"
    (wired,) = [f["iogpu.wired_limit_mb"] for f in p.fixes if "iogpu.wired_limit_mb" in f]
    assert f"sudo sysctl iogpu.wired_limit_mb={wired}" in p.sentence
    raised = plan(mac(128, wired_limit_mb=wired), prompt_cache_bytes=16 * GiB)
    assert raised.verdict == "fits"


def test_192gb_mac_fits_with_the_whole_prompt_cache():
    p = plan(mac(192))
    assert p.verdict == "fits" and p.prompt_cache == 16 * GiB


def test_cuda_plans_a_full_precision_kv_cache():
    p = plan(H200)
    assert p.verdict == "fits" and p.kv_bits == 0
    assert p.kv_at_cap == 120_064 * 253_952  # 30.5 GB: quantized attention fails on CUDA
    assert not p.scores_in_memory  # the fused attention of mlx's CUDA backend


def test_request_fits_counts_the_kv_growth_against_what_is_in_use():
    p = plan(mac(128))
    in_use = p.weights + p.prompt_cache + p.runtime
    assert mp.request_fits(p, in_use, prompt_tokens=100_000, max_tokens=20_000)
    assert not mp.request_fits(p, in_use + 20 * GB, prompt_tokens=100_000, max_tokens=20_000)
    assert mp.request_fits(p, in_use + 20 * GB, prompt_tokens=2_000, max_tokens=1_000)


def test_check_model_fits_refuses_only_what_cannot_fit_at_all(tmp_path):
    paths = Paths(home=tmp_path, config_file=tmp_path / "server.toml", log_dir=tmp_path / "logs")
    settings = config.load({}, {}, paths)
    with pytest.raises(UserError, match="cannot fit: the weights"):
        mp.check_model_fits(REAP50, REAP50_WEIGHTS, settings, device=mac(64))
    mp.check_model_fits(REAP50, REAP50_WEIGHTS, settings, device=mac(96))  # settings can change


def test_auto_is_resolved_once_into_bytes(tmp_path, demo_model):
    paths = Paths(home=tmp_path, config_file=tmp_path / "server.toml", log_dir=tmp_path / "logs")
    settings = config.load({"model": str(demo_model)}, {}, paths)
    assert settings.prompt_cache_bytes == "auto" and settings.memory_limit == "auto"
    cpu = mp.Device("linux-cpu", 64 * GiB, 32 * GiB, "of RAM")
    resolved = plan_cmd.resolve(settings, plan_cmd.plan_for(settings, device=cpu))
    assert isinstance(resolved.prompt_cache_bytes, int) and resolved.prompt_cache_bytes > 0
    assert "auto" in resolved.origin("prompt_cache_bytes")


# -- the scripts ---------------------------------------------------------------------


def test_start_refuses_a_model_that_cannot_fit_before_loading_it(script, demo_model, tmp_path):
    r = script(
        "start-server.sh",
        "--model",
        str(demo_model),
        "--memory-limit",
        "1MB",
        "--port",
        "1",
        home=tmp_path,
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "error: the model cannot fit" in r.stderr
    assert "memory_limit = 1MB (set by --memory-limit)" in r.stderr
    assert "Traceback" not in r.stderr and "ready" not in r.stdout


def test_start_refuses_settings_that_do_not_fit_naming_what_to_change(script, demo_model, tmp_path):
    r = script(
        "start-server.sh",
        "--model",
        str(demo_model),
        "--memory-limit",
        "1.6GB",
        "--port",
        "1",
        home=tmp_path,
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "does not fit" in r.stderr and "--max-tokens" in r.stderr


def test_plan_json_is_the_plan_and_its_exit_status_the_verdict(script, demo_model, tmp_path):
    r = script(
        "start-server.sh",
        "--model",
        str(demo_model),
        "--plan",
        "--json",
        "--max-tokens",
        "4096",
        home=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)
    assert p["verdict"] == "fits" and p["knobs"]["max_tokens"] == 4096
    assert p["total"] <= p["limit"] and p["weights"] > 0
    r = script(
        "start-server.sh",
        "--model",
        str(demo_model),
        "--plan",
        "--memory-limit",
        "1MB",
        home=tmp_path,
    )
    assert r.returncode == 3 and "cannot fit" in r.stdout


# -- spilling the prompt cache -----------------------------------------------------------


def test_spill_frees_at_least_what_was_asked_least_useful_first():
    store = PromptCacheStore(max_entries=8, max_bytes=1 << 40)
    for i, n in enumerate((3000, 3000, 3000)):  # three conversations of equal size
        store.insert_cache("m", [i] * n, small_kv(n))
    each = store.nbytes // 3
    freed = store.spill(each + 1)
    assert freed == 2 * each and len(store) == 1
    assert store.items[max(store.items)].tokens[0] == 2  # the most recent one stays
    assert store.spill(0) == 0 and store.spill(10 * each) == each and len(store) == 0
