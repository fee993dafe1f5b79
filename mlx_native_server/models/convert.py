"""Converting a model (`./convert-model.sh`; its flags: commands/convert.py):
a Hugging Face checkpoint (Hub id or local directory) ->
local-models/<Name>-MLX-<bits>bit/, through mlx-lm's converter; a model that
is already MLX -> local-models/<Name>/, as is.

Quantization keeps the architecture's own rule (mlx-lm uses the model's
`quant_predicate`; MiniMax keeps its router gates at 8 bits). An MLX source
(config.json's quantization in MLX's form and `.scales` beside quantized
weights) is not converted again: its files are downloaded, hard-linked or
copied unchanged, once the memory plan says it can run here. Either way the
output is written to a hidden directory beside the target and moved into
place only after it loaded and generated, so a failure never leaves half a
model.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import UserError
from ..core.paths import Paths
from . import hub as hub_download
from . import install as model_install
from . import source as model_source
from .copy import same_filesystem
from .hub import HubRepo
from .output import Steps, check_target, disk_size, finish, one_line, partial_dir
from .source import Source, human_bytes

DEFAULT_BITS = 4
DEFAULT_GROUP_SIZE = 64


@dataclass(frozen=True)
class ConvertSettings:
    """What to convert, how, and where to (commands/convert.py makes it from the flags)."""

    source: str
    bits: int | None  # None: not given (DEFAULT_BITS, or an MLX source's own)
    group_size: int | None  # None: not given, likewise
    name: str
    force: bool
    verify: bool
    revision: str | None
    paths: Paths

    @property
    def q_bits(self) -> int:
        return self.bits or DEFAULT_BITS

    @property
    def q_group_size(self) -> int:
        return self.group_size or DEFAULT_GROUP_SIZE

    @property
    def output(self) -> Path:
        """Where a conversion goes."""
        return self.paths.models_dir / f"{self.name}-MLX-{self.q_bits}bit"

    @property
    def installed(self) -> Path:
        """Where an MLX source installed as is goes: its own name."""
        return self.paths.models_dir / self.name


# -- the mlx-lm side -----------------------------------------------------------


def mlx_lm_version() -> str:
    from ..adapter.models import version

    return version()


def check_architecture(config: dict) -> None:
    """UserError unless the installed mlx-lm has a model class for config."""
    from ..adapter.models import model_classes as _get_classes  # how mlx-lm itself picks the class

    try:
        _get_classes(config)
    except ValueError:
        raise UserError(
            f"mlx-lm {mlx_lm_version()} does not support the '{config['model_type']}' architecture "
            "(model_type in config.json); a newer mlx-lm may: see MLX_LM_MANAGEMENT.md "
            "(./setup-mlx-lm-repo.sh --check VERSION)."
        ) from None


def run_converter(source: Path, dest: Path, s: ConvertSettings) -> None:
    from ..adapter.models import convert

    try:
        # No quant_predicate: mlx-lm then uses the model's own (MiniMax: 8-bit gates).
        convert(str(source), str(dest), quantize=True, q_bits=s.q_bits, q_group_size=s.q_group_size)
    except Exception as e:
        raise UserError(
            f"mlx-lm could not convert {s.source}: {one_line(e)}; check that the "
            "checkpoint is complete and of a supported architecture."
        ) from None


def check_fits(config: dict, weight_bytes: int, s: ConvertSettings) -> None:
    """UserError with the memory plan's sentence when the model cannot run
    on this machine with the server's settings (flags aside: environment,
    server.toml, defaults)."""
    from ..core import config as server_config
    from ..memory.device import detect_device
    from ..memory.plan import check_model_fits

    settings = server_config.load(paths=s.paths)
    check_model_fits(config, weight_bytes, settings, detect_device(settings))


# -- steps ---------------------------------------------------------------------


def inspect(s: ConvertSettings, step: Steps, api=None) -> Source | HubRepo:
    """The checked source: a local directory (the user's, or a complete
    download in the Hugging Face cache), or what the Hub says about a repo
    not downloaded yet. Nothing large is fetched."""
    spec = s.source
    src: Source | HubRepo
    if not model_source.looks_like_hub_id(spec):
        step(f"checking {spec}")
        # A path on the command line is relative to where the user is.
        src = model_source.local(spec, Path(spec).expanduser().resolve())
    elif (path := hub_download.cached(spec, s.revision, api)) is not None:
        step(f"checking the cached download of {spec} in {path}")
        src = model_source.local(spec, path, hub_id=spec)
    else:
        step(f"looking up {spec} on the Hugging Face Hub")
        src = hub_download.lookup(spec, s.revision, api)
        if not src.config.get("model_type"):
            raise UserError(
                f"{spec}'s config.json has no model_type; it is not a model mlx-lm can convert."
            )
    check_architecture(src.config)
    return src


def mlx_quantization(src: Source | HubRepo, api=None) -> dict | None:
    """The source's own quantization if it is already an MLX model, else None."""
    if isinstance(src, Source):
        return src.mlx_quantization
    quant = model_source.mlx_quantization(src.config)
    if quant and model_source.has_mlx_layout(hub_download.tensor_names(src, api)):
        return quant
    return None


def _count(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def _download_checkpoint(s: ConvertSettings, repo: HubRepo, api=None) -> Source:
    """Download a checkpoint to convert into the Hugging Face cache, once
    there is room for it (and for the result, on the same filesystem)."""
    cache = hub_download.cache_dir()
    needed = repo.download_bytes
    if repo.parameters and same_filesystem(cache, s.paths.models_dir):
        needed += model_source.estimate_output_bytes(repo.parameters, s.q_bits, s.q_group_size)
    model_source.check_free_space(
        cache, needed, f"downloading {repo.repo_id} ({human_bytes(repo.download_bytes)})"
    )
    path = hub_download.download(repo, api=api)
    return model_source.local(repo.repo_id, path, hub_id=repo.repo_id)


def convert_model(
    s: ConvertSettings, src: Source | HubRepo, step: Steps, api=None
) -> tuple[Path, str | None]:
    """Convert, check and move into place; return the output and the sample
    text. Raises UserError, leaving no output, on any failure."""
    out = s.output
    check_target(out, s.force)
    if isinstance(src, HubRepo):
        src = _download_checkpoint(s, src, api)
    estimate = model_source.estimate_output_bytes(src.parameters, s.q_bits, s.q_group_size)
    model_source.check_free_space(out.parent, estimate, f"the {s.q_bits}-bit model")
    tmp = partial_dir(out)
    try:
        step(
            f"converting {_count(src.parameters)} weights to {s.q_bits} bits (group size "
            f"{s.q_group_size}, about {human_bytes(estimate)}) with mlx-lm {mlx_lm_version()}"
        )
        run_converter(src.path, tmp, s)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, finish(tmp, out, step, s.verify, "converted")


def _check_agrees(s: ConvertSettings, quant: dict) -> None:
    """An MLX source is installed as is: a --bits or --group-size asking for
    something else cannot be honoured."""
    for flag, asked, has in (
        ("--bits", s.bits, quant["bits"]),
        ("--group-size", s.group_size, quant["group_size"]),
    ):
        if asked is not None and asked != has:
            raise UserError(
                f"{s.source} is already an MLX model quantized at {quant['bits']} bits (group "
                f"size {quant['group_size']}) and is installed as is, so {flag} {asked} cannot "
                f"apply; drop {flag}, or convert the full-precision checkpoint with {flag} "
                f"{asked}."
            )


def install_model(
    s: ConvertSettings, src: Source | HubRepo, quant: dict, step: Steps, api=None
) -> tuple[Path, str | None]:
    """Install an MLX source as is into local-models/<name>; return the
    output and the sample text. Checks the flags, the target and the memory
    plan before anything is downloaded or copied."""
    _check_agrees(s, quant)
    print(
        f"  already MLX ({quant['bits']} bits, group size {quant['group_size']}): installed as "
        "is, no conversion",
        flush=True,
    )
    out = s.installed
    check_target(out, s.force)
    if s.verify:
        check_fits(src.config, src.weight_bytes, s)
    if isinstance(src, HubRepo):
        return out, model_install.from_hub(src, out, step, s.verify, api)
    return out, model_install.from_local(src, out, step, s.verify)


def run(s: ConvertSettings, api=None) -> tuple[str, Path, str | None]:
    """Convert s.source, or install it as is when it is already MLX; return
    ('converted' or 'installed', the output directory, the sample text).
    `api` is the HfApi-like object for Hub calls (default: a real HfApi)."""
    step = Steps(4 if s.verify else 3)
    src = inspect(s, step, api)
    quant = mlx_quantization(src, api)
    if quant is None:
        return ("converted", *convert_model(s, src, step, api))
    return ("installed", *install_model(s, src, quant, step, api))


# -- report --------------------------------------------------------------------


def quantization_summary(config: dict) -> str:
    """'4 bits, group size 64; 2 layers at 8 bits (e.g. ...gate)' from the
    output config.json: what the quantization predicate decided."""
    q = model_source.mlx_quantization(config) or {}
    text = f"{q.get('bits')} bits, group size {q.get('group_size')}"
    special = {k: v for k, v in q.items() if isinstance(v, dict)}
    kept = sorted(k for k, v in q.items() if v is False)
    for bits, count in sorted(Counter(v.get("bits") for v in special.values()).items()):
        example = next(k for k, v in special.items() if v.get("bits") == bits)
        text += f"; {count} layer(s) at {bits} bits (e.g. {example})"
    if kept:
        text += f"; {len(kept)} layer(s) unquantized"
    return text


def report(s: ConvertSettings, done: str, out: Path, text: str | None) -> None:
    config = json.loads((out / "config.json").read_text("utf-8"))
    try:
        shown = out.relative_to(s.paths.home)
    except ValueError:
        shown = out
    print(f"\n{done + ':':<10} {shown} ({human_bytes(disk_size(out))} on disk)")
    print(f"quantized: {quantization_summary(config)}")
    if text is not None:
        print(f"sample:    {text!r}")
    print(
        f"\nTo serve it, put this line in {s.paths.config_file.name}:\n"
        f'    model = "{shown}"\n'
        f"or run: ./start-server.sh --model {shown}"
    )
