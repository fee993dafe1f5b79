"""What `convert` converts from: a local Hugging Face-format directory, or a
Hub repository downloaded into the Hugging Face cache.

Checks that need no model loading happen here, before any conversion:
config.json, the weight files, a tokenizer, free disk space, and whether the
source is already MLX (then it is installed as is). Sizes and tensor names
come from the safetensors headers alone.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import UserError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Scales and biases of affine quantization: two 16-bit values per group.
_GROUP_OVERHEAD_BITS = 32
# Headroom over the estimate: unquantized norms and biases, the tokenizer, and
# a filesystem that should not be filled to the last byte.
_ESTIMATE_MARGIN = 1.10
_SPARE_BYTES = 256 * 2**20
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tiktoken.model", "vocab.json")


@dataclass(frozen=True)
class Source:
    """A checked local directory holding the checkpoint."""

    spec: str  # what the user gave
    path: Path
    hub_id: str | None
    config: dict
    parameters: int
    weights: tuple[Path, ...] = ()
    # {"bits": .., "group_size": ..} when it is already an MLX quantized model.
    mlx_quantization: dict | None = None

    @property
    def weight_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.weights)


def looks_like_hub_id(spec: str) -> bool:
    """'owner/name' that is not an existing path (./x/y is a path)."""
    return bool(_HUB_ID.match(spec)) and not Path(spec).expanduser().exists()


def default_name(spec: str) -> str:
    """'MiniMaxAI/MiniMax-M2.1' or '/models/MiniMax-M2.1/' -> 'MiniMax-M2.1'."""
    return Path(spec.rstrip("/")).name or "model"


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def read_config(path: Path) -> dict:
    file = path / "config.json"
    try:
        config = json.loads(file.read_text("utf-8"))
    except FileNotFoundError:
        raise UserError(
            f"{path} has no config.json, so it is not a Hugging Face checkpoint; "
            "pass the directory that holds config.json and the weights."
        ) from None
    except (OSError, ValueError) as e:
        raise UserError(f"{file} cannot be read ({e}); download the checkpoint again.") from None
    if not isinstance(config, dict) or not config.get("model_type"):
        raise UserError(
            f"{file} has no model_type, so the architecture is unknown; "
            "download the checkpoint again or fix config.json."
        )
    return config


def weight_files(path: Path) -> list[Path]:
    """The safetensors files, complete: every shard the index names exists."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text("utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError) as e:
            raise UserError(
                f"{index} cannot be read ({e}); download the checkpoint again."
            ) from None
        missing = [n for n in names if not (path / n).is_file()]
        if missing:
            raise UserError(
                f"{path} lacks {len(missing)} of the {len(names)} weight files its "
                f"index names (first: {missing[0]}); finish the download and run "
                "again."
            )
        return [path / n for n in names]
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise UserError(
            f"{path} has no *.safetensors weight files; mlx-lm converts safetensors "
            "checkpoints only (download them, or convert .bin files with "
            "transformers first)."
        )
    return files


def check_tokenizer(path: Path) -> None:
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise UserError(
            f"{path} has no tokenizer ({', '.join(TOKENIZER_FILES)}); copy the "
            "tokenizer files of the original model into it and run again."
        )


def safetensors_header(file: Path) -> dict:
    """The JSON table of a safetensors file (8-byte little-endian length,
    then the JSON), without reading any weights."""
    try:
        with file.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            return json.loads(f.read(length))
    except (OSError, ValueError, struct.error) as e:
        raise UserError(
            f"{file} is not a readable safetensors file ({e}); download it again."
        ) from None


def tensors(files: list[Path]) -> dict[str, dict]:
    """Every tensor's header entry (dtype, shape), by name, over all files."""
    found: dict[str, dict] = {}
    for file in files:
        found.update((k, v) for k, v in safetensors_header(file).items() if k != "__metadata__")
    return found


def count_parameters(files: list[Path]) -> int:
    """Number of weights in the safetensors files, from their headers alone."""
    return _parameters(tensors(files))


def _parameters(found: dict[str, dict]) -> int:
    total = 0
    for info in found.values():
        n = 1
        for d in info.get("shape", []):
            n *= d
        total += n
    return total


def mlx_quantization(config: dict) -> dict | None:
    """The quantization config.json declares in MLX's form (`quantization`,
    or `quantization_config` holding bits and group_size), else None.
    GPTQ, AWQ, FP8 and the like name a `quant_method`: they are not MLX."""
    for key in ("quantization", "quantization_config"):
        q = config.get(key)
        if (
            isinstance(q, dict)
            and "quant_method" not in q
            and isinstance(q.get("bits"), int)
            and isinstance(q.get("group_size"), int)
        ):
            return q
    return None


def has_mlx_layout(names) -> bool:
    """Whether the tensor names hold a linear quantized MLX's way: `X.scales`
    beside the packed `X.weight` (GPTQ and AWQ pack into `X.qweight`)."""
    names = set(names)
    return any(n.endswith(".scales") and n[: -len("scales")] + "weight" in names for n in names)


def estimate_output_bytes(parameters: int, bits: int, group_size: int) -> int:
    """Size of the converted model: every weight at `bits`, plus a scale and
    a bias per group, plus a margin for what stays unquantized."""
    bits_per_weight = bits + _GROUP_OVERHEAD_BITS / group_size
    return int(parameters * bits_per_weight / 8 * _ESTIMATE_MARGIN)


def check_free_space(where: Path, needed: int, what: str) -> None:
    """Raise UserError unless the filesystem of `where` has `needed` bytes
    plus some spare."""
    probe = where
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed + _SPARE_BYTES:
        raise UserError(
            f"{what} needs about {human_bytes(needed)} but {probe} has "
            f"{human_bytes(free)} free; free some space or convert elsewhere."
        )


def local(spec: str, path: Path, hub_id: str | None = None) -> Source:
    """Check a local checkpoint directory and count its weights."""
    if not path.is_dir():
        raise UserError(
            f"'{spec}' is neither a directory nor a Hugging Face repo id "
            "(owner/name); check the spelling."
        )
    config = read_config(path)
    files = weight_files(path)
    check_tokenizer(path)
    found = tensors(files)
    parameters = _parameters(found)
    quant = mlx_quantization(config) if has_mlx_layout(found) else None
    return Source(spec, path, hub_id, config, parameters, tuple(files), quant)
