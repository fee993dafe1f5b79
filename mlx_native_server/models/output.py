"""Writing a model directory under local-models/ so that a failure never
leaves half a model: numbered progress steps, a hidden directory beside the
target, a load-and-generate check, then one rename into place."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from ..core.errors import UserError

SAMPLE_TOKENS = 8


class Steps:
    """Numbered progress lines with the time each step took."""

    def __init__(self, total: int):
        self.total, self.n, self.started = total, 0, time.monotonic()

    def __call__(self, text: str) -> None:
        self.n += 1
        print(f"[{self.n}/{self.total}] {text}", flush=True)

    def elapsed(self) -> str:
        return f"{time.monotonic() - self.started:.1f}s"


def one_line(e: BaseException, limit: int = 200) -> str:
    text = " ".join(str(e).split()).rstrip(".") or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_target(out: Path, force: bool) -> None:
    """UserError if `out` exists and may not be replaced; else make its
    parent and remove the partial outputs of runs that died."""
    if out.exists() and not force:
        raise UserError(
            f"{out} already exists; pass --force to replace it, or --name to pick another name."
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out)


def partial_dir(out: Path) -> Path:
    """The hidden directory this process writes `out` into."""
    return out.with_name(f".{out.name}.partial-{os.getpid()}")


def clean_stale(out: Path) -> None:
    """Remove partial outputs of runs that died (killed, power cut)."""
    for partial in out.parent.glob(f".{out.name}.partial-*"):
        try:
            os.kill(int(partial.name.rsplit("-", 1)[1]), 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(partial, ignore_errors=True)
        except PermissionError:
            pass  # alive, someone else's


def sample(path: Path, what: str = "converted") -> str:
    """Load the model at `path` and generate a few tokens; UserError if it
    does not load or generate."""
    from ..adapter.models import sample as mlx_lm_sample

    try:
        return mlx_lm_sample(str(path), SAMPLE_TOKENS)
    except Exception as e:
        raise UserError(
            f"the {what} model did not load and generate ({one_line(e)}); "
            "nothing was kept. Run again with --no-verify to keep it anyway."
        ) from None


def swap_in(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def finish(tmp: Path, out: Path, step: Steps, verify: bool, what: str) -> str | None:
    """Check the model in `tmp` (unless not `verify`) and move it to `out`;
    return the sample text. On any failure `tmp` is removed."""
    try:
        text = None
        if verify:
            step(f"loading the result and generating {SAMPLE_TOKENS} tokens")
            text = sample(tmp, what)
        step(f"moving it into place after {step.elapsed()}")
        swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return text


def disk_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
