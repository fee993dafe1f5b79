"""Fetch a Hugging Face Hub checkpoint into the Hugging Face cache, with
huggingface_hub's progress bars, after a look at its size and config.json.

Only the files mlx-lm loads are fetched (its own allow patterns), so the
download is the same one `mlx_lm.convert` would make.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Callable

from .errors import UserError

try:  # the patterns mlx-lm itself downloads with
    from mlx_lm.utils import DEFAULT_ALLOW_PATTERNS as ALLOW_PATTERNS
except ImportError:  # pragma: no cover - moved upstream; keep the 0.32 list
    ALLOW_PATTERNS = ["*.json", "model*.safetensors", "*.py", "tokenizer.model", "*.tiktoken",
                      "tiktoken.model", "*.txt", "*.jsonl", "*.jinja"]

# Called with config.json, the download size and the parameter count (None
# when the Hub does not say), before anything large is fetched.
BeforeDownload = Callable[[dict, int, "int | None"], None]


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _hub_error(repo_id: str, e: BaseException) -> UserError:
    """One sentence for whatever the Hub call raised."""
    from huggingface_hub import errors

    if type(e).__name__ == "OfflineModeIsEnabled":
        return UserError(f"HF_HUB_OFFLINE is set, so {repo_id} cannot be downloaded; unset it, "
                         "or pass the local directory of a downloaded checkpoint.")
    if isinstance(e, errors.GatedRepoError):
        return UserError(f"{repo_id} is gated: accept its terms on "
                         f"https://huggingface.co/{repo_id} and log in with 'hf auth login', "
                         "then run again.")
    if isinstance(e, errors.RepositoryNotFoundError):
        return UserError(f"{repo_id} was not found on the Hugging Face Hub (or it is private: "
                         "log in with 'hf auth login'); check the name.")
    if isinstance(e, errors.RevisionNotFoundError):
        return UserError(f"{repo_id} has no such revision; check the branch, tag or commit.")
    if isinstance(e, errors.HfHubHTTPError):
        return UserError(f"the Hugging Face Hub refused {repo_id} ({_short(e)}); try again later.")
    return UserError(f"could not reach the Hugging Face Hub to download {repo_id} ({_short(e)}); "
                     "check the network, or download the checkpoint elsewhere and pass its "
                     "local directory.")


def cached(repo_id: str, revision: str | None) -> Path | None:
    """The complete snapshot in the local cache, if there is one (no network)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=ALLOW_PATTERNS,
                                      local_files_only=True))
    except Exception:  # noqa: BLE001 - anything means "not usable offline"
        return None


def cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def fetch(repo_id: str, revision: str | None, before_download: BeforeDownload) -> Path:
    """The local snapshot of `repo_id`: the cached one, or a fresh download
    that `before_download` has first approved."""
    path = cached(repo_id, revision)
    if path is not None and (path / "config.json").is_file():
        print(f"using the cached download of {repo_id} in {path}", flush=True)
        return path
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    try:
        info = HfApi().model_info(repo_id, revision=revision, files_metadata=True)
        config_file = hf_hub_download(repo_id, "config.json", revision=revision)
        config = json.loads(Path(config_file).read_text("utf-8"))
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - every Hub failure becomes one sentence
        raise _hub_error(repo_id, e) from None
    size = sum(s.size or 0 for s in info.siblings or []
               if any(fnmatch.fnmatch(s.rfilename, p) for p in ALLOW_PATTERNS))
    params = getattr(info.safetensors, "total", None) if info.safetensors else None
    before_download(config, size, params)
    print(f"downloading {repo_id} into {cache_dir()}...", flush=True)
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=ALLOW_PATTERNS))
    except Exception as e:  # noqa: BLE001
        raise UserError(f"the download of {repo_id} stopped ({_short(e)}); run the same command "
                        "again to resume it.") from None
