"""The memory plan's edges: this machine, this model, `./start-server.sh --plan`,
and the limits start sets from the plan (memory/plan.py does the arithmetic;
this module imports it, and it imports nothing of this one)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

from ..core import proc
from ..core.config import Settings, human_size
from ..core.errors import UserError
from . import plan as mp
from .footprint import Shape

log = logging.getLogger("mlx_native_server.plan")

EXIT_DOES_NOT_FIT = 3


def _meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes."""
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            out[name] = int(fields[0]) * 1024
    return out


def _wired_limit_mb() -> int:
    """macOS iogpu.wired_limit_mb; 0 when it is the default or unreadable."""
    r = proc.run(["sysctl", "-n", "iogpu.wired_limit_mb"], check=False, timeout=5)
    return int(r.stdout.strip()) if r.ok and r.stdout.strip().isdigit() else 0


def platform_name() -> str:
    """'macos', 'cuda' or 'linux-cpu': which of the plan's machines this is."""
    import mlx.core as mx

    if sys.platform == "darwin":
        return "macos"
    return "cuda" if mx.cuda.is_available() else "linux-cpu"


def measured_device() -> mp.Device:
    """The limit this machine gives the server: on macOS the GPU's wired
    limit (iogpu.wired_limit_mb when raised, else Metal's recommended working
    set), on CUDA the GPU's free memory, on a Linux CPU the available RAM."""
    import mlx.core as mx

    platform = platform_name()
    if platform == "macos":
        info = mx.device_info()
        ws, wired = int(info["max_recommended_working_set_size"]), _wired_limit_mb()
        limit = wired * mp.MiB if wired else ws
        where = (
            f"of iogpu.wired_limit_mb = {wired}"
            if wired
            else "this Mac lets the GPU use (its default wired limit)"
        )
        return mp.Device("macos", int(info["memory_size"]), limit, where, ws)
    if platform == "cuda":  # free: without the CUDA context and other processes
        info = mx.device_info()
        total = int(info.get("total_memory") or info["memory_size"])
        free = int(info.get("free_memory") or total)
        return mp.Device(
            "cuda", total, free, f"free on the GPU ({info.get('device_name', 'CUDA')})"
        )
    mem = _meminfo()
    return mp.Device(
        "linux-cpu", mem["MemTotal"], mem["MemAvailable"], "of RAM available now (MemAvailable)"
    )


def detect_device(settings: Settings) -> mp.Device:
    """The measured device, its limit replaced by memory_limit unless auto."""
    device = measured_device()
    if settings.memory_limit == "auto":
        return device
    origin = settings.origin("memory_limit")
    return dataclasses.replace(
        device,
        limit=settings.memory_limit,
        overridden=True,
        limit_source=f"of memory_limit = {human_size(settings.memory_limit)} ({origin})",
    )


def weight_bytes(model_dir: Path) -> int:
    return sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))


def _world_size() -> int:
    size = os.environ.get("MLX_WORLD_SIZE", "")
    return int(size) if size.isdigit() and int(size) > 0 else 1


def plan_for(settings: Settings, device: mp.Device | None = None) -> mp.Plan:
    """The plan for the configured model at these settings on this machine."""
    path = settings.model_path
    try:
        config = json.loads((path / "config.json").read_text())
        shape = Shape.from_config(config)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(
            f"cannot read the shape of {path / 'config.json'} for the memory plan "
            f"({e}); is it a complete model? Re-run ./convert-model.sh."
        ) from None
    can_quantize = True
    if settings.kv_bits:
        from ..adapter.kv import kv_quantization_works  # the same probe the engine runs

        can_quantize = kv_quantization_works(
            settings.kv_bits, settings.kv_group_size, shape.head_dim
        )
    return mp.make_plan(
        config,
        weight_bytes(path),
        mp.Knobs.from_settings(settings),
        device or detect_device(settings),
        can_quantize,
        _world_size(),
    )


def resolve(settings: Settings, plan: mp.Plan) -> Settings:
    """prompt_cache_bytes = auto becomes the plan's bytes (at least 1: 0
    would mean no byte limit); everything below start sees an int."""
    if settings.prompt_cache_bytes != "auto":
        return settings
    origins = {
        **settings.origins,
        "prompt_cache_bytes": f"auto: what the memory plan leaves ({settings.origin('prompt_cache_bytes')})",
    }
    return dataclasses.replace(
        settings, prompt_cache_bytes=max(plan.prompt_cache, 1), origins=origins
    )


def apply_limits(plan: mp.Plan) -> None:
    """Before the model loads: make mlx wait for work in flight rather than
    go past the plan's limit (its default on Metal is 1.5 times the GPU's
    working set), wire what the plan may use (macOS), and keep mlx's buffer
    cache to one prefill chunk's working set, the transients that recur chunk
    after chunk; more would be memory the plan never counted."""
    import mlx.core as mx

    mx.set_memory_limit(plan.limit)
    if plan.wired_limit:
        mx.set_wired_limit(plan.wired_limit)
    mx.set_cache_limit(plan.prefill)
    log.info("memory plan: %s", plan.sentence)


def enforce(settings: Settings) -> tuple[Settings, mp.Plan]:
    """start's check: refuse with the plan's sentence unless it fits; else
    apply its limits and return the settings with auto resolved, and the
    plan (for request admission: memory_plan.request_fits)."""
    plan = plan_for(settings)
    if plan.verdict != "fits":
        raise UserError(f"the model {plan.sentence} ./start-server.sh --plan shows the whole plan.")
    apply_limits(plan)
    return resolve(settings, plan), plan


def table(plan: mp.Plan, settings: Settings) -> str:
    k = plan.knobs
    kv = f"{plan.kv_bits}-bit" if plan.kv_bits else "full precision"
    rows = [
        ("weights", plan.weights, str(settings.model_path)),
        (
            f"KV cache at max_tokens = {k.max_tokens}",
            plan.kv_at_cap,
            f"{kv}: {plan.kv_per_token_quantized:,.0f} B/token ({plan.kv_per_token_full:,.0f} "
            f"below quantized_kv_start = {k.quantized_kv_start})",
        ),
        (
            f"prefill at prefill_step_size = {k.prefill_step_size}",
            plan.prefill,
            "scores held in memory" if plan.scores_in_memory else "fused attention",
        ),
        (
            "prompt cache" + (" (auto)" if plan.prompt_cache_auto else ""),
            plan.prompt_cache,
            f"up to {k.prompt_cache_size} entries",
        ),
        ("runtime", plan.runtime, "Python, tokenizer, mlx"),
        ("total", plan.total, f"limit {mp.gb(plan.limit)} {plan.limit_source}"),
    ]
    lines = [
        f"memory plan on {plan.platform}" + (f", {plan.ranks} ranks" if plan.ranks > 1 else "")
    ]
    lines += [f"  {name:<38} {mp.gb(n):>9}  {note}" for name, n, note in rows]
    return "\n".join(lines + ["", plan.sentence])


def show(settings: Settings, as_json: bool) -> int:
    """`--plan [--json]`: print the plan; 0 if it fits, 3 if not."""
    plan = plan_for(settings)
    if as_json:
        print(json.dumps(dataclasses.asdict(plan), indent=2))
    else:
        print(table(plan, settings))
    return 0 if plan.verdict == "fits" else EXIT_DOES_NOT_FIT
