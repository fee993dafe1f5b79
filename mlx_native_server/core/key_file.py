"""The API key read from api_key_file, so it need not be a flag (which every
local user sees in `ps`) or a line of server.toml."""

from __future__ import annotations

from pathlib import Path

from .errors import UserError


def read_key(path: Path, where: str) -> str:
    """The first line of `path`, stripped. `where` names the setting in
    messages (e.g. "api_key_file = 'key.txt' (set in server.toml)"). A
    missing, unreadable or empty file is a UserError saying how to fix it."""
    make = f"(umask 077; printf '%s\\n' YOUR-KEY > {path}) writes one readable by you only"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{where}: {path} does not exist. {make}; or unset api_key_file.") from None
    except (OSError, UnicodeDecodeError) as e:
        why = getattr(e, "strerror", None) or str(e)
        raise UserError(
            f"{where}: cannot read {path} ({why}). It must be a text file readable "
            f"by the user running the server; or unset api_key_file."
        ) from None
    lines = text.splitlines()
    key = lines[0].strip() if lines else ""
    if not key:
        raise UserError(
            f"{where}: the first line of {path} is empty; it must be the API key. {make}."
        )
    return key
