"""The memory plan: do this model and these settings fit this machine?

Pure arithmetic over plain data (config.json, the weights' size, the
settings, a Device), no mlx: KV_CACHE_QUANTIZATION.md ("Memory plan") gives
the formulas and the measurements behind them. The peak of one request is

    weights + prompt cache + runtime + max(KV + prefill working set)

taken at the context cap (the last prefill chunk attends to every cached
token) and at the switch to a quantized cache (both copies exist a moment).
memory/footprint.py prices a context (KV, prefill); this module adds the
rest and gives the verdict, the settings that would fit and its sentence.
memory/device.py measures the machine and applies the plan; it imports this
module, never the other way round. `check_model_fits` is what
./convert-model.sh asks before it downloads a model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from ..core.errors import UserError
from .footprint import Shape, kv_per_token, peak, scores_materialized

GiB, MiB = 2**30, 2**20
RUNTIME_BYTES = 1 * GiB  # Python, tokenizer, mlx runtime, HTTP (demo server: ~0.1 GB RSS)
AUTO_CEILING = 16 * GiB  # prompt_cache_bytes = auto takes what is left, up to this
AUTO_FLOOR = 1 * GiB  # ...and needs this much: ~15K tokens of a coding agent's prompt at 4 bits
MIN_CONTEXT = 4096  # below this context the server is of no use: the model cannot fit
MACOS_RESERVE = 8 * GiB  # left to macOS itself when suggesting a higher GPU wired limit


@dataclass(frozen=True)
class Device:
    """This machine as the plan sees it; `limit` is what the server may use."""

    platform: str  # "macos", "linux-cpu" or "cuda"
    total: int  # RAM (macOS, Linux) or the GPU's memory (CUDA)
    limit: int
    limit_source: str  # says what the limit is, for the sentence
    working_set: int = 0  # macOS: max_recommended_working_set_size, mlx's wired ceiling
    overridden: bool = False  # limit set by memory_limit


@dataclass(frozen=True)
class Knobs:
    """The settings the plan reads. prompt_cache_bytes: bytes, or "auto"."""

    max_tokens: int
    kv_bits: int
    kv_group_size: int
    quantized_kv_start: int
    prompt_cache_bytes: Any
    prompt_cache_size: int
    prefill_step_size: int

    @classmethod
    def from_settings(cls, settings) -> Knobs:
        return cls(**{f: getattr(settings, f) for f in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Plan:
    """The verdict ("fits", "fits_if", "cannot_fit") and the bytes behind it."""

    verdict: str
    sentence: str
    platform: str
    limit: int
    limit_source: str
    weights: int
    kv_bits: int  # what the cache really uses: 0 where the backend cannot quantize
    kv_per_token_full: float  # below quantized_kv_start
    kv_per_token_quantized: float  # from quantized_kv_start on (= full without kv_bits)
    kv_at_cap: int
    prefill: int  # working set of the last chunk at prefill_step_size
    prompt_cache: int  # its budget, resolved
    prompt_cache_auto: bool
    runtime: int
    total: int
    fixes: list = field(default_factory=list)  # dicts of settings that would fit
    # Required, but keyword-only so they can follow the defaulted fields while
    # keeping their place in the --plan --json output (dataclasses.asdict order).
    shape: Shape = field(kw_only=True)
    knobs: Knobs = field(kw_only=True)
    scores_in_memory: bool = True
    wired_limit: int = 0  # bytes for mx.set_wired_limit (macOS), 0: leave it
    ranks: int = 1


def gb(n: float) -> str:
    """Bytes as people read memory sizes: '61.0 GB', '38.4 MB'."""
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _peak(shape: Shape, k: Knobs, bits: int, platform: str, tokens: int) -> tuple[int, int, int]:
    """footprint.peak of `tokens` at these settings, with the cache at `bits`."""
    step, group, start = k.prefill_step_size, k.kv_group_size, k.quantized_kv_start
    return peak(shape, platform, tokens, step, bits=bits, group_size=group, quantized_start=start)


def _prompt_cache_need(k: Knobs, kv_cap: int) -> int:
    """What the prompt cache needs at least: its budget, or auto's floor."""
    most = k.prompt_cache_size * kv_cap  # entries are at most one context each
    if k.prompt_cache_bytes == "auto":
        return min(AUTO_FLOOR, most)
    return min(k.prompt_cache_bytes, most) if k.prompt_cache_bytes else most


class _Need(NamedTuple):
    kv: int
    prefill: int
    fixed: int  # all but the prompt cache
    prompt_cache: int  # at least

    @property
    def total(self) -> int:
        return self.fixed + self.prompt_cache


def make_plan(
    config: dict,
    weight_bytes: int,
    knobs: Knobs,
    device: Device,
    can_quantize_kv: bool = True,
    ranks: int = 1,
) -> Plan:
    """The plan for a model (config.json and its *.safetensors bytes) at these
    settings on this device. Under mlx.launch each of `ranks` holds a share."""
    shape = Shape.from_config(config)
    bits = knobs.kv_bits if can_quantize_kv else 0
    weights = weight_bytes // ranks

    def need(k: Knobs) -> _Need:
        kv, ws, top = _peak(shape, k, bits, device.platform, k.max_tokens)
        kv, ws = kv // ranks, ws // ranks
        return _Need(kv, ws, weights + RUNTIME_BYTES + top // ranks, _prompt_cache_need(k, kv))

    n = need(knobs)
    pc = n.prompt_cache
    auto = knobs.prompt_cache_bytes == "auto"
    if auto and n.total <= device.limit:
        pc = min(AUTO_CEILING, knobs.prompt_cache_size * n.kv, device.limit - n.fixed)
    plan = Plan(
        "fits",
        "",
        device.platform,
        device.limit,
        device.limit_source,
        weights,
        bits,
        kv_per_token(shape, 0, 64),
        kv_per_token(shape, bits, knobs.kv_group_size),
        n.kv,
        n.prefill,
        pc,
        auto,
        RUNTIME_BYTES,
        n.fixed + pc,
        shape=shape,
        knobs=knobs,
        scores_in_memory=scores_materialized(
            device.platform, bits > 0 and knobs.max_tokens > knobs.quantized_kv_start
        ),
        ranks=ranks,
        wired_limit=(min(device.limit, device.working_set) if device.platform == "macos" else 0),
    )
    floor = need(replace(knobs, max_tokens=min(knobs.max_tokens, MIN_CONTEXT), prompt_cache_size=0))
    if floor.total > device.limit:
        return replace(
            plan,
            verdict="cannot_fit",
            sentence=_cannot_fit(plan, device, shape, weight_bytes, floor.total),
        )
    if plan.total > device.limit:
        fixes = _fixes(knobs, device, need)
        return replace(plan, verdict="fits_if", fixes=fixes, sentence=_fits_if(plan, fixes))
    return replace(plan, sentence=_fits(plan))


def _largest(lo: int, hi: int, ok) -> int | None:
    """The largest n in [lo, hi] with ok(n), ok being monotone; None if none."""
    if not ok(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
    return lo


def _round_tokens(n: int) -> int:
    return n // 1000 * 1000 if n >= 2000 else n


def _fixes(k: Knobs, device: Device, need: Callable[[Knobs], _Need]) -> list[dict]:
    """Changes of the settings, each of which alone makes the plan fit."""
    fits = lambda **c: need(replace(k, **c)).total <= device.limit  # noqa: E731
    out, least = [], min(MIN_CONTEXT, k.max_tokens)
    n = _largest(least, k.max_tokens, lambda n: fits(max_tokens=n))
    if n is not None:
        out.append({"max_tokens": _round_tokens(n)})
    steps = [
        s for s in (1024, 512, 256, 128) if s < k.prefill_step_size and fits(prefill_step_size=s)
    ]
    if steps:
        out.append({"prefill_step_size": steps[0]})
    now = need(k)
    room = device.limit - now.fixed
    if room >= 64 * MiB and (k.prompt_cache_bytes == "auto" or room < now.prompt_cache):
        out.append({"prompt_cache_bytes": room // (64 * MiB) * 64 * MiB})
    if not out:  # it fits at MIN_CONTEXT without a prompt cache (else cannot_fit)
        n = _largest(least, k.max_tokens, lambda n: fits(max_tokens=n, prompt_cache_size=0))
        assert n is not None, "make_plan returns cannot_fit before asking for fixes"
        out.append({"max_tokens": _round_tokens(n), "prompt_cache_size": 0})
    if device.platform == "macos" and not device.overridden:
        wants = [now.total]  # with auto: room for its ceiling if the Mac has it, else its floor
        if k.prompt_cache_bytes == "auto":
            wants.insert(0, now.fixed + min(AUTO_CEILING, k.prompt_cache_size * now.kv))
        for want in wants:
            mb = -(-want // (1024 * MiB)) * 1024  # whole GiB, in the sysctl's MiB
            if mb * MiB <= device.total - MACOS_RESERVE:
                out.append({"iogpu.wired_limit_mb": mb})
                break
    return out


def _fix_text(fix: dict) -> str:
    from ..core.config import human_size

    if "iogpu.wired_limit_mb" in fix:
        mb = fix["iogpu.wired_limit_mb"]
        return f"raise the GPU limit: sudo sysctl iogpu.wired_limit_mb={mb}"
    parts = []
    for key, value in fix.items():
        shown = human_size(value) if key == "prompt_cache_bytes" else value
        slower = "; prefill gets slower" if key == "prefill_step_size" else ""
        parts.append(f"{key} = {shown} (--{key.replace('_', '-')} {shown}{slower})")
    return " and ".join(parts)


def _breakdown(p: Plan) -> str:
    pc = "auto " if p.prompt_cache_auto else ""
    return (
        f"{gb(p.weights)} weights + {gb(p.kv_at_cap)} KV at {p.knobs.max_tokens:,} tokens + "
        f"{gb(p.prefill)} prefill at step {p.knobs.prefill_step_size} + "
        f"{gb(p.prompt_cache)} {pc}prompt cache + {gb(p.runtime)} runtime"
    )


def _fits(p: Plan) -> str:
    return f"fits: {_breakdown(p)} = {gb(p.total)} of the {gb(p.limit)} {p.limit_source}."


def _fits_if(p: Plan, fixes: list[dict]) -> str:
    return (
        f"does not fit: {_breakdown(p)} = {gb(p.total)}, above the {gb(p.limit)} "
        f"{p.limit_source}. Any one of these fits: "
        + "; or ".join(_fix_text(f) for f in fixes)
        + "."
    )


def _cannot_fit(p: Plan, device: Device, shape: Shape, weight_bytes: int, floor: int) -> str:
    text = (
        f"cannot fit: the weights ({gb(p.weights)}), the runtime and a {MIN_CONTEXT:,}-token "
        f"context need {gb(floor)}, above the {gb(p.limit)} {p.limit_source}. "
    )
    more = "raise memory_limit" if device.overridden else "use a machine with more memory"
    rest = floor - p.weights
    for bits in (6, 5, 4, 3, 2):  # group size 64: a scale and a bias add 0.5 bits
        smaller = weight_bytes * (bits + 0.5) / shape.weight_bits / p.ranks
        if bits + 0.5 < shape.weight_bits and smaller + rest <= p.limit:
            return text + (
                f"A {bits}-bit conversion needs about {gb(smaller)} of weights "
                f"(.venv/bin/mlx_lm.convert --hf-path <hf-repo> -q --q-bits {bits}), "
                f"or {more}."
            )
    return text + f"No smaller quantization fits either: {more}."


def request_fits(
    plan: Plan, active_bytes: int, prompt_tokens: int, max_tokens: int, others_tokens: int = 0
) -> bool:
    """Whether a request of `prompt_tokens` + `max_tokens` tokens keeps within
    the plan's limit, given the bytes mlx has in use now
    (`mx.get_active_memory()`: weights, prompt cache, other requests): its
    KV cache grown to the end, and its prefill's working set. `others_tokens`
    are the tokens the requests already running may still add to their own
    caches; they count as if this request's cache held them too."""
    k, shape = plan.knobs, plan.shape
    prefill = _peak(shape, k, plan.kv_bits, plan.platform, max(1, prompt_tokens))[2]
    end = max(1, prompt_tokens + max_tokens + others_tokens)
    grown = _peak(shape, k, plan.kv_bits, plan.platform, end)[0]
    return active_bytes + max(prefill, grown) // plan.ranks <= plan.limit


def check_model_fits(config: dict, weight_bytes: int, settings, device: Device) -> None:
    """Raise UserError with the plan's sentence when the model cannot fit
    `device` at all (weights too large for any usable context); settings that
    are merely too large are start's to refuse. The caller measures the device
    (memory.device.detect_device): this module stays arithmetic."""
    quantizes = device.platform != "cuda"  # mlx 0.32.4 on CUDA: see KV_CACHE_QUANTIZATION.md
    plan = make_plan(config, weight_bytes, Knobs.from_settings(settings), device, quantizes)
    if plan.verdict == "cannot_fit":
        raise UserError(plan.sentence)
