"""Installing a model that is already MLX as is: no conversion, its files
unchanged, under local-models/.

From a local directory the files are hard-linked when they sit on the same
filesystem (instant, no extra space), else copied with progress. From the Hub
they are downloaded by huggingface_hub into a hidden directory beside the
target whose name does not change between runs, so a run that stopped (network,
Ctrl-C) resumes where it was. Either way the result is checked, loaded and
moved into place by `model_output.finish`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..core.errors import UserError
from . import hub as hub_download
from . import source as model_source
from .copy import link_or_copy, same_filesystem
from .hub import HubRepo
from .output import Steps, disk_size, finish, partial_dir
from .source import Source, human_bytes


def files_to_install(src: Source) -> list[Path]:
    """The files mlx-lm loads (the checked weight files, config, tokenizer,
    chat template), as a Hub download of the same model would hold them."""
    top = [
        f
        for f in src.path.iterdir()
        if f.is_file() and not f.name.startswith(".") and hub_download.wanted(f.name)
    ]
    return sorted({f.name: f for f in [*top, *src.weights]}.values(), key=lambda f: f.name)


def from_local(src: Source, out: Path, step: Steps, verify: bool) -> str | None:
    """Link or copy src's files into `out`; return the sample text."""
    files = files_to_install(src)
    total = sum(f.stat().st_size for f in files)
    if not same_filesystem(src.path, out.parent):
        model_source.check_free_space(out.parent, total, f"copying {src.spec}")
    tmp = partial_dir(out)
    step(f"installing {src.spec} as is: {len(files)} files, {human_bytes(total)}")
    try:
        tmp.mkdir()
        how = link_or_copy(files, tmp)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(
            f"copying {src.path} into {out.parent} failed ({e}); nothing was kept: "
            "free some space or fix the permissions, then run again."
        ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"  {how} {len(files)} files ({human_bytes(total)})", flush=True)
    return finish(tmp, out, step, verify, "installed")


def download_dir(out: Path) -> Path:
    """Where the Hub download of `out` goes: the same on every run, so the
    next run resumes (model_output.clean_stale leaves it alone)."""
    return out.with_name(f".{out.name}.download")


def from_hub(repo: HubRepo, out: Path, step: Steps, verify: bool, api=None) -> str | None:
    """Download the repo into `out`; return the sample text. A download that
    stops keeps what it fetched for the next run."""
    if not any(name in model_source.TOKENIZER_FILES for name in repo.files):
        wanted = ", ".join(model_source.TOKENIZER_FILES)
        raise UserError(
            f"{repo.repo_id} has no tokenizer ({wanted}); it cannot be served as it "
            "is: pick a repo that ships one."
        )
    tmp = download_dir(out)
    have = disk_size(tmp) if tmp.exists() else 0
    model_source.check_free_space(
        out.parent,
        max(repo.download_bytes - have, 0),
        f"downloading {repo.repo_id} ({human_bytes(repo.download_bytes)})",
    )
    step(
        f"downloading {repo.repo_id} as is ({human_bytes(repo.download_bytes)}"
        + (f", {human_bytes(have)} of it already here)" if have else ")")
    )
    hub_download.download(repo, tmp, api)
    try:
        # huggingface_hub's resume bookkeeping; the model is complete without it.
        shutil.rmtree(tmp / ".cache", ignore_errors=True)
        model_source.local(repo.repo_id, tmp, hub_id=repo.repo_id)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return finish(tmp, out, step, verify, "installed")
