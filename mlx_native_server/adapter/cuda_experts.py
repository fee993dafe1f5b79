"""A decode step's experts on CUDA: two kernels a layer in place of gather_qmm.

mlx 0.32's CUDA `gather_qmm` runs its tiled tensor-core kernel for every
MoE decode step (its gather_qmv only below 8 (token, expert) pairs, and one
MiniMax token has 8), so on the H200 a step of 4 rows took ~16 ms, GPU-bound
in the experts, where one row takes ~8 ms (benchmarks/README.md). The
kernels of cuda_expert_kernels.py read each pair's expert rows a few at a
time a group of lanes, the gate and up projections and SwiGLU in one pass.

They go in as `SwitchGLU.__call__` (mlx-lm's class, which MiniMax's sparse
block calls), for a call of fewer than SORTED_FROM pairs (a decode step;
mlx-lm sorts the pairs of longer calls, a prefill, and those stay on mlx)
whose projections are quantized the way the kernels read and whose
activation is SwiGLU. Everything else goes to mlx-lm's own. Before going
in, the kernels are checked once against mlx's gather_qmm at the model's
widths on this GPU; when they fail or disagree, mlx's path stays and the
log says why. Removed by an mlx whose CUDA gather_qmm takes its gather_qmv
kernel for a decode step's pairs.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import mlx.core as mx
from mlx_lm.models import switch_layers

from .cuda_attention import applies
from .cuda_expert_kernels import TOLERANCE, Quantized, built_for, disagreement, experts

log = logging.getLogger("mlx_native_server.adapter.cuda_experts")

SORTED_FROM = 64  # pairs from which mlx-lm's SwitchGLU sorts them (`indices.size >= 64`)

_installed: bool | None = None  # None: not tried in this process
_path = "mlx"  # what a decode step's experts run on, for /status (path())


def path() -> str:
    """What a decode step's experts run on, for /status: "cuda-kernel" (the
    kernels here), or "mlx" (mlx's gather_qmm; on CUDA with the reason the
    kernels stayed out)."""
    return _path


def _keep_mlx(why: str) -> bool:
    global _path, _installed
    _path = f"mlx ({why})"
    _installed = False
    log.warning("a decode step's experts stay on mlx's gather_qmm: %s", why)
    return False


def _quantized(linear) -> Quantized | None:
    """The projection's weights as the kernels take them, or None when it is
    not affine-quantized with biases and no added bias."""
    if not isinstance(linear, switch_layers.QuantizedSwitchLinear):
        return None
    if linear.mode != "affine" or getattr(linear, "global_scale", None) is not None:
        return None
    if "bias" in linear:
        return None
    biases = linear.get("biases")
    if biases is None:
        return None
    return Quantized(linear["weight"], linear["scales"], biases, linear.bits, linear.group_size)


def projections(glu) -> tuple[Quantized, Quantized, Quantized] | None:
    """A SwitchGLU's gate, up and down projections if the kernels take them
    (SwiGLU between, the same quantization throughout), else None."""
    if type(glu.activation) is not switch_layers.SwiGLU:
        return None
    found = [_quantized(glu.gate_proj), _quantized(glu.up_proj), _quantized(glu.down_proj)]
    gate, up, down = found
    if gate is None or up is None or down is None or not built_for(gate, up, down):
        return None
    return gate, up, down


def _cached(glu) -> tuple[Quantized, Quantized, Quantized] | None:
    """projections(glu), kept on the module while its gate weights are the same array."""
    held: Any = glu.__dict__.get("_mns_experts")
    weight = glu.gate_proj.get("weight")
    if held is None or held[0] is not weight:
        held = (weight, projections(glu))
        object.__setattr__(glu, "_mns_experts", held)
    return held[1]


def _first_glu(model):
    for _, module in model.named_modules():
        if isinstance(module, switch_layers.SwitchGLU):
            return module
    return None


def install(model) -> bool:
    """On CUDA, make SwitchGLU run a decode step's experts through the
    kernels (once per process, after checking them against mlx's
    gather_qmm at this model's widths on this GPU). True when they went in."""
    global _installed, _path
    if _installed is not None:
        return _installed
    if not applies():
        _installed = False
        return False
    glu = _first_glu(model)
    if glu is None:
        _installed = False
        log.info("the model has no SwitchGLU experts: nothing for the experts kernels")
        return False
    found = projections(glu)
    if found is None:  # a model's own choice, not a failure: no warning
        _installed, _path = False, "mlx (its experts are not affine 4- or 8-bit)"
        log.info("the model's experts are not affine 4- or 8-bit with SwiGLU: mlx's gather_qmm")
        return False
    gate, _, _ = found
    began = time.perf_counter()
    log.info(
        "checking the decode experts kernels against mlx's gather_qmm at the model's widths "
        "(on a first start mlx compiles both, which can take a few minutes)"
    )
    try:  # at the model's own widths, so the kernels are compiled before the first step
        worst = disagreement(
            width=gate.width,
            hidden=gate.weight.shape[1],
            bits=gate.bits,
            group_size=gate.group_size,
            dtype=gate.scales.dtype,
        )
    except Exception as e:  # the kernels did not compile or run on this GPU
        return _keep_mlx(f"the kernels failed: {e}")
    finally:
        mx.clear_cache()  # the check's random experts (~1 GB at REAP-50's widths) go back
    if worst > TOLERANCE:
        return _keep_mlx(f"the kernels differ from it by {worst:.4f} of the largest output")
    original = switch_layers.SwitchGLU.__call__

    def __call__(self, x, indices):
        if indices.size < SORTED_FROM:
            found = _cached(self)
            if found is not None:
                return experts(x, indices, *found)
        return original(self, x, indices)

    __call__.original = original  # type: ignore[attr-defined]
    switch_layers.SwitchGLU.__call__ = __call__  # type: ignore[method-assign]
    _installed = True
    _path = "cuda-kernel"
    log.info(
        "a decode step's experts: two CUDA kernels a layer (cuda_expert_kernels.py; "
        "checked in %.1f s)",
        time.perf_counter() - began,
    )
    return True
