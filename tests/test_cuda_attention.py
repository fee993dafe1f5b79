"""adapter/cuda_attention.py and cuda_kernels.py: the fused decode attention of
a left-padded batch.

The kernels themselves run only on CUDA (the first test, skipped elsewhere);
on any backend the rest checks where the model's attention hands over to them
(a full-precision batched one-token step, with each row's own first key) and
that a kernel which fails its check leaves mlx's attention in place.
"""

from __future__ import annotations

import importlib
import logging

import mlx.core as mx
import pytest
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.utils import load

from mlx_native_server.adapter import batch_kv, cuda_attention, cuda_kernels


@pytest.mark.skipif(not cuda_attention.applies(), reason="the kernels run on CUDA only")
@pytest.mark.parametrize("dtype", [mx.bfloat16, mx.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("head_dim", [64, 96, 128])
def test_kernel_matches_mlx_masked_attention(dtype, head_dim):
    lengths = (1, 33, 1024, 1025, 5000)  # one key, a few, and past mlx's one-pass limit
    worst = cuda_kernels.disagreement(dtype, head_dim, lengths, heads=48, kv_heads=8)
    assert worst <= cuda_kernels.TOLERANCE


PROMPTS = [[1, 5, 9, 33, 70, 120, 7], [4, 2, 88, 61, 19, 240, 3, 9, 11, 17, 52, 99, 6, 300]]


@pytest.fixture(scope="module")
def model(demo_model):
    return load(str(demo_model))[0]


@pytest.fixture
def attention(model, monkeypatch):
    """The model module as install() finds it, restored afterwards; install
    may go in (as on CUDA) and `calls` records each kernel call, which runs
    mlx's masked attention in its place."""
    module = importlib.import_module(type(model).__module__)
    monkeypatch.setattr(module, "scaled_dot_product_attention", module.scaled_dot_product_attention)
    monkeypatch.setattr(cuda_attention, "_installed", {})
    monkeypatch.setattr(cuda_attention, "_path", "mlx")
    monkeypatch.setattr(cuda_attention, "applies", lambda: True)
    monkeypatch.setattr(cuda_attention, "disagreement", lambda **shape: 0.0)
    calls: list[tuple[list[int], int]] = []

    def kernel(queries, keys, values, starts, scale):
        calls.append((starts.tolist(), keys.shape[2]))
        return cuda_kernels.reference(queries, keys, values, starts, scale)

    monkeypatch.setattr(cuda_attention, "decode_attention", kernel)
    return module, calls


def step(model, caches_of, tokens) -> mx.array:
    """One decode step of PROMPTS' rows: batched when `caches_of` merges them."""
    caches = []
    for prompt in PROMPTS:
        cache = make_prompt_cache(model)
        model(mx.array([prompt]), cache=cache)
        caches.append(cache)
    return model(mx.array([[t] for t in tokens]), cache=caches_of(caches))[:, -1, :]


def test_a_batched_step_attends_through_the_kernel_from_each_rows_start(model, attention):
    module, calls = attention
    before = step(model, batch_kv.merge, [3, 8])
    assert cuda_attention._attention_shape(model) == (4, 2, 64)  # the demo model's ModelArgs
    assert cuda_attention.install(model)
    wrapper = module.scaled_dot_product_attention
    assert wrapper.original is not None
    after = step(model, batch_kv.merge, [3, 8])
    assert cuda_attention.path() == "cuda-kernel"
    longest = max(len(p) for p in PROMPTS)
    padding = [longest - len(p) for p in PROMPTS]
    assert calls == [(padding, longest + 1)] * len(model.layers)  # every layer, the batch's starts
    assert mx.allclose(after, before, atol=1e-5)
    assert cuda_attention.install(model)  # once per module: the same wrapper stays
    assert module.scaled_dot_product_attention is wrapper


def test_other_steps_keep_mlxs_attention(model, attention):
    module, calls = attention
    assert cuda_attention.install(model)
    cache = make_prompt_cache(model)
    model(mx.array([PROMPTS[0]]), cache=cache)  # a prefill, then a lone step: no mask
    model(mx.array([[3]]), cache=cache)
    quantized = lambda caches: batch_kv.maybe_quantize(batch_kv.merge(caches), 0, 64, 4)  # noqa: E731
    step(model, quantized, [3, 8])
    assert calls == []


@pytest.mark.parametrize("failure", ["raises", "differs", "shape"])
def test_a_kernel_that_fails_its_check_leaves_mlxs_attention(
    model, attention, monkeypatch, caplog, failure
):
    module, _ = attention
    own = module.scaled_dot_product_attention

    def check(**shape):
        if failure == "raises":
            raise RuntimeError("nvrtc: error")
        return 1.0 if failure == "differs" else 0.0

    monkeypatch.setattr(cuda_attention, "disagreement", check)
    if failure == "shape":  # a head_dim mlx's sdpa_vector has no kernel for
        monkeypatch.setattr(cuda_attention, "_attention_shape", lambda model: (48, 8, 80))
    with caplog.at_level(logging.WARNING, logger="mlx_native_server.adapter.cuda_attention"):
        assert not cuda_attention.install(model)
    assert module.scaled_dot_product_attention is own
    assert "stays on mlx's masked path" in caplog.text
    why = {
        "raises": "the kernel failed: nvrtc: error",
        "differs": "differs from it by 1.0000",
        "shape": "no kernel for 48 query heads on 8 KV heads of head_dim 80",
    }[failure]
    assert cuda_attention.path().startswith("mlx (") and why in cuda_attention.path()


def test_nothing_changes_off_cuda(model, attention, monkeypatch):
    module, _ = attention
    own = module.scaled_dot_product_attention
    monkeypatch.setattr(cuda_attention, "applies", lambda: False)
    assert not cuda_attention.install(model)
    assert module.scaled_dot_product_attention is own
    assert cuda_attention.path() == "mlx"
