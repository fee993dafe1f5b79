"""`./convert-model.sh`: flags -> ConvertSettings, then models/convert.py
converts (or installs as is) and reports."""

from __future__ import annotations

import argparse

from ..core.errors import UserError, reported
from ..core.paths import Paths
from ..models import convert
from ..models import source as model_source
from ..models.convert import DEFAULT_BITS, DEFAULT_GROUP_SIZE, ConvertSettings

DESCRIPTION = """\
Convert a Hugging Face checkpoint to MLX into local-models/<Name>-MLX-<bits>bit/
with mlx-lm's converter, keeping the architecture's own quantization rule
(MiniMax: router gates at 8 bits). SOURCE is a Hub repo id (owner/name,
downloaded with progress into the Hugging Face cache) or a local directory in
Hugging Face format (works offline).

A SOURCE that is already an MLX quantized model (mlx-community's and others')
is installed as is into local-models/<Name>/ under its own name, at its own
bits: downloaded, or hard-linked/copied from a local directory, after a check
that it fits this machine's memory.

Checks free disk space first, refuses to overwrite without --force, and
afterwards loads the result, generates a few tokens and prints the config line
that points the server at it."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="./convert-model.sh",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", metavar="SOURCE", help="Hugging Face repo id or local directory")
    p.add_argument(
        "--bits",
        type=int,
        choices=(4, 6, 8),
        help=f"bits per weight (default: {DEFAULT_BITS}; an MLX source keeps its own, "
        "and a --bits that differs is refused)",
    )
    p.add_argument(
        "--group-size",
        type=int,
        choices=(32, 64, 128),
        help=f"weights per quantization group (default: {DEFAULT_GROUP_SIZE}; an MLX "
        "source keeps its own)",
    )
    p.add_argument(
        "--name",
        help="output name: the part before -MLX-<bits>bit for a conversion, "
        "the whole directory name for an MLX source (default: the "
        "last part of SOURCE)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing output directory (only once the new one is complete)",
    )
    p.add_argument("--revision", help="branch, tag or commit of a Hub repo (default: main)")
    p.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip loading the result and generating a few tokens, and for an MLX "
        "source the memory check (for preparing a model on a machine too "
        "small to run it)",
    )
    return p


def settings_from(argv: list[str], paths: Paths | None = None) -> ConvertSettings:
    """The command line as ConvertSettings; UserError for a --name that is
    not a plain directory name."""
    args = parser().parse_args(argv)
    name = args.name or model_source.default_name(args.source)
    if not name or "/" in name or name.startswith("."):
        raise UserError(f"--name '{name}' is not a plain directory name; pick one without '/'.")
    return ConvertSettings(
        args.source,
        args.bits,
        args.group_size,
        name,
        args.force,
        args.verify,
        args.revision,
        paths or Paths.from_env(),
    )


@reported
def main(argv: list[str]) -> int:
    s = settings_from(argv)
    done, out, text = convert.run(s)
    convert.report(s, done, out, text)
    return 0
