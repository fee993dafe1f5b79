"""adapter/cuda_experts.py and cuda_expert_kernels.py: a decode step's experts
in two kernels a layer.

The kernels themselves run only on CUDA (the first tests, skipped
elsewhere); on any backend the rest checks where mlx-lm's SwitchGLU hands
over to them (a call of fewer than 64 (token, expert) pairs over affine
4- or 8-bit experts) and that kernels which fail their check leave mlx's
gather_qmm in place.
"""

from __future__ import annotations

import logging

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx_lm.models import switch_layers
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.utils import load

from mlx_native_server.adapter import cuda_attention, cuda_expert_kernels, cuda_experts

on_cuda = pytest.mark.skipif(not cuda_attention.applies(), reason="the kernels run on CUDA only")


# Each shape compiles mlx's gather_qmm kernels once a machine (~45 s on the
# H200): four cover both dtypes, both widths and both bit widths.
@on_cuda
@pytest.mark.parametrize(
    "dtype, bits, widths",
    [
        (mx.bfloat16, 4, (3072, 1536)),
        (mx.float16, 4, (512, 256)),
        (mx.bfloat16, 8, (512, 256)),
        (mx.float16, 8, (3072, 1536)),
    ],
    ids=["bf16-4-reap50", "f16-4-small", "bf16-8-small", "f16-8-reap50"],
)
def test_kernels_match_mlx_gather_qmm(dtype, bits, widths):
    worst = cuda_expert_kernels.disagreement(*widths, bits, 64, dtype, tokens=(1, 2, 4, 7))
    assert worst <= cuda_expert_kernels.TOLERANCE


@pytest.fixture(scope="module")
def quantized(demo_model):
    """The demo model with its experts (and linear layers) at 4 bits."""
    model = load(str(demo_model))[0]
    nn.quantize(model, group_size=32, bits=4)
    return model


@pytest.fixture
def experts(monkeypatch):
    """install() as on CUDA, with SwitchGLU restored afterwards; `calls`
    records each kernel call's pairs, and mlx's gather_qmm computes it."""
    monkeypatch.setattr(switch_layers.SwitchGLU, "__call__", switch_layers.SwitchGLU.__call__)
    monkeypatch.setattr(cuda_experts, "_installed", None)
    monkeypatch.setattr(cuda_experts, "_path", "mlx")
    monkeypatch.setattr(cuda_experts, "applies", lambda: True)
    monkeypatch.setattr(cuda_experts, "disagreement", lambda **shape: 0.0)
    calls: list[int] = []

    def kernel(x, idx, gate, up, down):
        calls.append(idx.size)
        return cuda_expert_kernels.reference(x, idx, gate, up, down)

    monkeypatch.setattr(cuda_experts, "experts", kernel)
    return calls


def forward(model, tokens: list[int], steps: int) -> list[mx.array]:
    """A prefill of `tokens`, then `steps` greedy one-token steps: each step's logits."""
    cache = make_prompt_cache(model)
    logits = model(mx.array([tokens]), cache=cache)[:, -1, :]
    out = [logits]
    for _ in range(steps):
        logits = model(mx.argmax(logits, axis=-1)[:, None], cache=cache)[:, -1, :]
        out.append(logits)
    return out


def test_a_decode_step_runs_the_kernels_and_a_prefill_does_not(quantized, experts):
    prompt = list(range(3, 40))  # 37 tokens, 74 pairs: sorted by mlx-lm, so mlx's
    before = forward(quantized, prompt, 3)
    assert cuda_experts.install(quantized)
    assert cuda_experts.path() == "cuda-kernel"
    after = forward(quantized, prompt, 3)
    top_k = quantized.args.num_experts_per_tok
    assert experts == [top_k] * 3 * len(quantized.layers)  # the steps, every layer; no prefill
    for a, b in zip(after, before, strict=True):
        assert mx.allclose(a, b, atol=1e-5)
    experts.clear()
    batch = make_prompt_cache(quantized)
    quantized(mx.array([[5], [9], [11]]), cache=batch)  # three rows' step: still under 64 pairs
    assert experts == [3 * top_k] * len(quantized.layers)
    assert cuda_experts.install(quantized)  # once a process: the same method stays
    assert switch_layers.SwitchGLU.__call__.original is not None  # type: ignore[attr-defined]


def test_experts_the_kernels_do_not_read_keep_mlx(demo_model, experts, caplog):
    model = load(str(demo_model))[0]  # float32 experts: SwitchLinear, not quantized
    own = switch_layers.SwitchGLU.__call__
    with caplog.at_level(logging.INFO, logger="mlx_native_server.adapter.cuda_experts"):
        assert not cuda_experts.install(model)
    assert switch_layers.SwitchGLU.__call__ is own
    assert cuda_experts.path() == "mlx (its experts are not affine 4- or 8-bit)"
    assert cuda_experts.projections(model.layers[0].block_sparse_moe.switch_mlp) is None


@pytest.mark.parametrize("failure", ["raises", "differs"])
def test_kernels_that_fail_their_check_leave_mlxs_experts(
    quantized, experts, monkeypatch, caplog, failure
):
    own = switch_layers.SwitchGLU.__call__

    def check(**shape):
        if failure == "raises":
            raise RuntimeError("nvrtc: error")
        return 1.0

    monkeypatch.setattr(cuda_experts, "disagreement", check)
    with caplog.at_level(logging.WARNING, logger="mlx_native_server.adapter.cuda_experts"):
        assert not cuda_experts.install(quantized)
    assert switch_layers.SwitchGLU.__call__ is own
    assert "stay on mlx's gather_qmm" in caplog.text
    why = {
        "raises": "the kernels failed: nvrtc: error",
        "differs": "the kernels differ from it by 1.0000 of the largest output",
    }[failure]
    assert cuda_experts.path() == f"mlx ({why})"
    forward(quantized, [3, 4, 5], 1)
    assert experts == []


def test_the_kernels_read_only_what_they_are_built_for(quantized):
    glu = quantized.layers[0].block_sparse_moe.switch_mlp
    gate, up, down = cuda_experts.projections(glu) or (None, None, None)
    assert gate is not None and gate.bits == 4 and gate.group_size == 32
    assert gate.width == quantized.args.hidden_size
    assert cuda_expert_kernels.built_for(gate, up, down)
    three = cuda_expert_kernels.Quantized(gate.weight, gate.scales, gate.biases, 3, 32)
    assert not cuda_expert_kernels.built_for(three)  # 3 bits: no whole values a word
    odd = cuda_expert_kernels.Quantized(gate.weight, gate.scales, gate.biases, 4, 16)
    assert not cuda_expert_kernels.built_for(odd)  # a 16-byte chunk spans two groups
