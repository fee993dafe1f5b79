"""Fetch a Hugging Face Hub repository, with huggingface_hub's progress bars
(and its resume of partial files), after a look at its size and config.json.

Only the files mlx-lm loads are fetched (its own allow patterns), so the
download is the same one `mlx_lm.convert` would make. A checkpoint to convert
goes into the Hugging Face cache; an MLX model installed as is goes straight
into the directory it is installed from.

Every Hub call goes through one `HfApi`-like object (`api`, default a real
`HfApi()`), so tests pass a fake one instead of reaching the network.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..adapter.models import allow_patterns
from ..core.errors import UserError

ALLOW_PATTERNS = allow_patterns()  # the patterns mlx-lm itself downloads with


@dataclass(frozen=True)
class HubRepo:
    """What the Hub says about a repository, before anything large is fetched."""

    repo_id: str
    revision: str | None
    config: dict
    download_bytes: int  # the files mlx-lm loads
    weight_bytes: int  # the *.safetensors among them
    parameters: int | None  # None when the Hub does not say
    files: tuple[str, ...] = ()  # the names of the files mlx-lm loads


def wanted(filename: str) -> bool:
    """Whether mlx-lm loads this file of a model repository."""
    return any(fnmatch.fnmatch(filename, p) for p in ALLOW_PATTERNS)


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _hub_error(repo_id: str, e: BaseException) -> UserError:
    """One sentence for whatever the Hub call raised."""
    from huggingface_hub import errors

    if type(e).__name__ == "OfflineModeIsEnabled":
        return UserError(
            f"HF_HUB_OFFLINE is set, so {repo_id} cannot be downloaded; unset it, "
            "or pass the local directory of a downloaded checkpoint."
        )
    if isinstance(e, errors.GatedRepoError):
        return UserError(
            f"{repo_id} is gated: accept its terms on "
            f"https://huggingface.co/{repo_id} and log in with 'hf auth login', "
            "then run again."
        )
    if isinstance(e, errors.RepositoryNotFoundError):
        return UserError(
            f"{repo_id} was not found on the Hugging Face Hub (or it is private: "
            "log in with 'hf auth login'); check the name."
        )
    if isinstance(e, errors.RevisionNotFoundError):
        return UserError(f"{repo_id} has no such revision; check the branch, tag or commit.")
    if isinstance(e, errors.HfHubHTTPError):
        return UserError(f"the Hugging Face Hub refused {repo_id} ({_short(e)}); try again later.")
    return UserError(
        f"could not reach the Hugging Face Hub to download {repo_id} ({_short(e)}); "
        "check the network, or download the checkpoint elsewhere and pass its "
        "local directory."
    )


def _api(api: Any) -> Any:
    if api is not None:
        return api
    from huggingface_hub import HfApi

    return HfApi()


def cached(repo_id: str, revision: str | None, api: Any = None) -> Path | None:
    """The complete snapshot in the local cache, if there is one (no network)."""
    try:
        path = Path(
            _api(api).snapshot_download(
                repo_id, revision=revision, allow_patterns=ALLOW_PATTERNS, local_files_only=True
            )
        )
    except Exception:
        return None
    return path if (path / "config.json").is_file() else None


def cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def lookup(repo_id: str, revision: str | None, api: Any = None) -> HubRepo:
    """The repository's file sizes and config.json; UserError in one sentence
    for any Hub failure (no network, not found, gated)."""
    api = _api(api)
    try:
        info = api.model_info(repo_id, revision=revision, files_metadata=True)
        config_file = api.hf_hub_download(repo_id, "config.json", revision=revision)
        config = json.loads(Path(config_file).read_text("utf-8"))
    except Exception as e:
        raise _hub_error(repo_id, e) from None
    files = [s for s in info.siblings or [] if wanted(s.rfilename)]
    size = sum(s.size or 0 for s in files)
    weights = sum(s.size or 0 for s in files if s.rfilename.endswith(".safetensors"))
    params = getattr(info.safetensors, "total", None) if info.safetensors else None
    return HubRepo(
        repo_id,
        revision,
        config if isinstance(config, dict) else {},
        size,
        weights,
        params,
        tuple(s.rfilename for s in files),
    )


def tensor_names(repo: HubRepo, api: Any = None) -> list[str]:
    """The tensor names of the repository's safetensors files, from their
    headers alone (huggingface_hub reads them with range requests)."""
    from huggingface_hub import errors

    try:
        meta = _api(api).get_safetensors_metadata(repo.repo_id, revision=repo.revision)
    except errors.NotASafetensorsRepoError:
        return []
    except Exception as e:
        raise _hub_error(repo.repo_id, e) from None
    return list(meta.weight_map)


def download(repo: HubRepo, local_dir: Path | None = None, api: Any = None) -> Path:
    """Download the files mlx-lm loads, into the Hugging Face cache or into
    `local_dir`; run again, it resumes what an interrupted run left."""
    where = local_dir or cache_dir()
    print(f"downloading {repo.repo_id} into {where}...", flush=True)
    try:
        return Path(
            _api(api).snapshot_download(
                repo.repo_id,
                revision=repo.revision,
                allow_patterns=ALLOW_PATTERNS,
                local_dir=local_dir,
            )
        )
    except Exception as e:
        raise UserError(
            f"the download of {repo.repo_id} into {where} stopped ({_short(e)}); run "
            "the same command again to resume it."
        ) from None
