"""`./convert-model.sh`: a Hugging Face checkpoint (Hub id or local
directory) -> local-models/<Name>-MLX-<bits>bit/, through mlx-lm's converter.

Quantization keeps the architecture's own rule (mlx-lm uses the model's
`quant_predicate`; MiniMax keeps its router gates at 8 bits). The output is
written to a hidden directory beside the target and moved into place only
after it loaded and generated, so a failure never leaves half a model.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from . import model_source
from .errors import UserError, reported
from .model_source import Source, human_bytes
from .paths import Paths

DESCRIPTION = """\
Convert a Hugging Face checkpoint to MLX into local-models/<Name>-MLX-<bits>bit/
with mlx-lm's converter, keeping the architecture's own quantization rule
(MiniMax: router gates at 8 bits). SOURCE is a Hub repo id (owner/name,
downloaded with progress into the Hugging Face cache) or a local directory in
Hugging Face format (works offline). Checks free disk space first, refuses to
overwrite without --force, and afterwards loads the result, generates a few
tokens and prints the config line that points the server at it."""

SAMPLE_TOKENS = 8


@dataclass(frozen=True)
class ConvertSettings:
    source: str
    bits: int
    group_size: int
    name: str
    force: bool
    verify: bool
    revision: str | None
    paths: Paths

    @property
    def output(self) -> Path:
        return self.paths.models_dir / f"{self.name}-MLX-{self.bits}bit"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="./convert-model.sh", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="SOURCE", help="Hugging Face repo id or local directory")
    p.add_argument("--bits", type=int, choices=(4, 6, 8), default=4,
                   help="bits per weight (default: 4)")
    p.add_argument("--group-size", type=int, choices=(32, 64, 128), default=64,
                   help="weights per quantization group (default: 64)")
    p.add_argument("--name", help="output name before -MLX-<bits>bit (default: the last part "
                                  "of SOURCE)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing output directory (only once the new one is complete)")
    p.add_argument("--revision", help="branch, tag or commit of a Hub repo (default: main)")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip loading the result and generating a few tokens (for converting "
                        "on a machine too small to run the model)")
    return p


def settings_from(argv: list[str], paths: Paths | None = None) -> ConvertSettings:
    args = parser().parse_args(argv)
    name = args.name or model_source.default_name(args.source)
    if not name or "/" in name or name.startswith("."):
        raise UserError(f"--name '{name}' is not a plain directory name; pick one without '/'.")
    return ConvertSettings(args.source, args.bits, args.group_size, name, args.force,
                           args.verify, args.revision, paths or Paths.from_env())


# -- the mlx-lm side -----------------------------------------------------------


def mlx_lm_version() -> str:
    from mlx_lm import __version__

    return __version__


def _one_line(e: BaseException, limit: int = 200) -> str:
    text = " ".join(str(e).split()).rstrip(".") or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_architecture(config: dict) -> None:
    """UserError unless the installed mlx-lm has a model class for config."""
    from mlx_lm.utils import _get_classes  # how mlx-lm itself picks the class

    try:
        _get_classes(config)
    except ValueError:
        raise UserError(
            f"mlx-lm {mlx_lm_version()} does not support the '{config['model_type']}' architecture "
            "(model_type in config.json); a newer mlx-lm may: see MLX_LM_MANAGEMENT.md "
            "(./setup-mlx-lm-repo.sh --check VERSION).") from None


def run_converter(source: Path, dest: Path, s: ConvertSettings) -> None:
    from mlx_lm.convert import convert

    try:
        # No quant_predicate: mlx-lm then uses the model's own (MiniMax: 8-bit gates).
        convert(str(source), str(dest), quantize=True, q_bits=s.bits, q_group_size=s.group_size)
    except Exception as e:  # noqa: BLE001 - mlx-lm raises plain errors; say it in one line
        raise UserError(f"mlx-lm could not convert {s.source}: {_one_line(e)}; check that the "
                        "checkpoint is complete and of a supported architecture.") from None


def sample(path: Path) -> str:
    """Load the converted model and generate a few tokens."""
    from mlx_lm import generate, load

    try:
        model, tokenizer = load(str(path))
        prompt = "Hello"
        if getattr(tokenizer, "chat_template", None):
            prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Hello"}],
                                                   add_generation_prompt=True)
        return generate(model, tokenizer, prompt=prompt, max_tokens=SAMPLE_TOKENS)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"the converted model did not load and generate ({_one_line(e)}); "
                        "nothing was kept. Run again with --no-verify to keep it anyway.") from None


# -- steps ---------------------------------------------------------------------


class Steps:
    """Numbered progress lines with the time each step took."""

    def __init__(self, total: int):
        self.total, self.n, self.started = total, 0, time.monotonic()

    def __call__(self, text: str) -> None:
        self.n += 1
        print(f"[{self.n}/{self.total}] {text}", flush=True)

    def elapsed(self) -> str:
        return f"{time.monotonic() - self.started:.1f}s"


def _clean_stale(out: Path) -> None:
    """Remove partial outputs of conversions that died (killed, power cut)."""
    for partial in out.parent.glob(f".{out.name}.partial-*"):
        try:
            os.kill(int(partial.name.rsplit("-", 1)[1]), 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(partial, ignore_errors=True)
        except PermissionError:
            pass  # alive, someone else's


def resolve(s: ConvertSettings, step: Steps) -> Source:
    spec = s.source
    if not model_source.looks_like_hub_id(spec):
        step(f"checking {spec}")
        # A path on the command line is relative to where the user is.
        src = model_source.local(spec, Path(spec).expanduser().resolve())
        check_architecture(src.config)
        return src
    from . import hub_download

    step(f"looking up {spec} on the Hugging Face Hub")

    def approve(config: dict, download: int, params: int | None) -> None:
        if not config.get("model_type"):
            raise UserError(f"{spec}'s config.json has no model_type; it is not a model mlx-lm "
                            "can convert.")
        check_architecture(config)
        needed = download
        if params and _same_filesystem(hub_download.cache_dir(), s.paths.models_dir):
            needed += model_source.estimate_output_bytes(params, s.bits, s.group_size)
        model_source.check_free_space(hub_download.cache_dir(), needed,
                                      f"downloading {spec} ({human_bytes(download)})")

    path = hub_download.fetch(spec, s.revision, approve)
    return model_source.local(spec, path, hub_id=spec)


def _count(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def _same_filesystem(a: Path, b: Path) -> bool:
    def dev(p: Path) -> int:
        while not p.exists():
            p = p.parent
        return p.stat().st_dev

    return dev(a) == dev(b)


def _swap_in(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def convert_model(s: ConvertSettings) -> tuple[Path, str | None]:
    """Convert, check and move into place; return the output and the sample
    text. Raises UserError, leaving no output, on any failure."""
    out = s.output
    if out.exists() and not s.force:
        raise UserError(f"{out} already exists; pass --force to replace it, or --name to pick "
                        "another name.")
    out.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(out)
    step = Steps(4 if s.verify else 3)
    src = resolve(s, step)
    estimate = model_source.estimate_output_bytes(src.parameters, s.bits, s.group_size)
    model_source.check_free_space(out.parent, estimate, f"the {s.bits}-bit model")
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        step(f"converting {_count(src.parameters)} weights to {s.bits} bits (group size "
             f"{s.group_size}, about {human_bytes(estimate)}) with mlx-lm {mlx_lm_version()}")
        run_converter(src.path, tmp, s)
        text = None
        if s.verify:
            step(f"loading the result and generating {SAMPLE_TOKENS} tokens")
            text = sample(tmp)
        step(f"moving it into place after {step.elapsed()}")
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, text


# -- report --------------------------------------------------------------------


def disk_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def quantization_summary(config: dict) -> str:
    """'4 bits, group size 64; 2 layers at 8 bits (e.g. ...gate)' from the
    output config.json: what the quantization predicate decided."""
    q = config.get("quantization") or {}
    text = f"{q.get('bits')} bits, group size {q.get('group_size')}"
    special = {k: v for k, v in q.items() if isinstance(v, dict)}
    kept = sorted(k for k, v in q.items() if v is False)
    for bits, count in sorted(Counter(v.get("bits") for v in special.values()).items()):
        example = next(k for k, v in special.items() if v.get("bits") == bits)
        text += f"; {count} layer(s) at {bits} bits (e.g. {example})"
    if kept:
        text += f"; {len(kept)} layer(s) unquantized"
    return text


def report(s: ConvertSettings, out: Path, text: str | None) -> None:
    config = json.loads((out / "config.json").read_text("utf-8"))
    try:
        shown = out.relative_to(s.paths.home)
    except ValueError:
        shown = out
    print(f"\nconverted: {shown} ({human_bytes(disk_size(out))} on disk)")
    print(f"quantized: {quantization_summary(config)}")
    if text is not None:
        print(f"sample:    {text!r}")
    print(f"\nTo serve it, put this line in {s.paths.config_file.name}:\n"
          f"    model = \"{shown}\"\n"
          f"or run: ./start-server.sh --model {shown}")


@reported
def main(argv: list[str] | None = None) -> int:
    s = settings_from(list(argv or []))
    out, text = convert_model(s)
    report(s, out, text)
    return 0
