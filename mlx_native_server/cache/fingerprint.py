"""A model's fingerprint: which weights, tokenizer and chat template it is.

Disk cache entries carry it, so a KV state computed by one model is never
given to another. Hashing 61 GB of weights would take minutes at every
start, so weights count by name, size and three 1 MiB samples (start,
middle, end) of each file; the safetensors header at the start of each file
lists every tensor's name, shape and offsets. Small files (config,
tokenizer, chat template, weight index) are hashed whole.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

SAMPLE_BYTES = 1 << 20  # 1 MiB from the start, middle and end of each weight file
WHOLE_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
    "model.safetensors.index.json",
)


def _samples(path: Path, size: int) -> list[bytes]:
    offsets = sorted({0, max(0, size // 2 - SAMPLE_BYTES // 2), max(0, size - SAMPLE_BYTES)})
    out = []
    with path.open("rb") as f:
        for offset in offsets:
            f.seek(offset)
            out.append(f.read(SAMPLE_BYTES))
    return out


def model_fingerprint(model_dir: str | os.PathLike) -> str:
    """Hex SHA-256 over the model's identifying files (see the module doc).

    Raises OSError if the directory cannot be read.
    """
    root = Path(model_dir)
    h = hashlib.sha256(b"mlx-native-server model fingerprint v1\0")
    for name in WHOLE_FILES:
        path = root / name
        if path.is_file():
            h.update(f"{name}\0".encode())
            h.update(hashlib.sha256(path.read_bytes()).digest())
    weights = sorted(root.glob("*.safetensors"))
    if not weights:
        raise OSError(f"no *.safetensors weights in {root}")
    for path in weights:
        size = path.stat().st_size
        h.update(f"{path.name}\0{size}\0".encode())
        for sample in _samples(path, size):
            h.update(hashlib.sha256(sample).digest())
    return h.hexdigest()
