"""Config precedence, origins, validation, the typed schema, and the committed example file."""

import dataclasses
import types
import typing
from pathlib import Path

import pytest

from mlx_native_server.core import config, config_docs, config_values
from mlx_native_server.core.errors import UserError
from mlx_native_server.core.paths import Paths

REPO = Path(__file__).resolve().parent.parent


def paths_at(tmp_path: Path, toml: str = "") -> Paths:
    (tmp_path / "server.toml").write_text(toml)
    return Paths.from_env({"MLX_NATIVE_SERVER_HOME": str(tmp_path)})


def test_defaults_match_the_brief(tmp_path):
    s = config.load({}, {}, paths_at(tmp_path))
    assert (s.port, s.host, s.served_model_id, s.max_tokens, s.kv_bits) == (
        8000,
        "127.0.0.1",
        "mlx-local",
        120000,
        4,
    )
    assert s.model == "local-models/MiniMax-M2.1-REAP-50-MLX-4bit"
    assert s.base_url == "http://localhost:8000/v1"
    assert all(origin == "default" for origin in s.origins.values())


def test_flag_beats_env_beats_file_beats_default(tmp_path):
    paths = paths_at(tmp_path, 'port = 8100\nkv_bits = 8\nhost = "127.0.0.2"\n')
    env = {"MLX_NATIVE_SERVER_PORT": "8200", "MLX_NATIVE_SERVER_KV_BITS": "0"}
    s = config.load({"port": "8300"}, env, paths)
    assert s.port == 8300 and s.origin("port") == "set by --port"
    assert s.kv_bits == 0 and s.origin("kv_bits") == "set by MLX_NATIVE_SERVER_KV_BITS"
    assert s.host == "127.0.0.2" and s.origin("host") == "set in server.toml"
    assert s.max_tokens == 120000 and s.origin("max_tokens") == "default"


def test_home_moves_every_path(tmp_path):
    s = config.load({"model": "local-models/x"}, {}, paths_at(tmp_path))
    assert s.model_path == tmp_path / "local-models" / "x"
    assert s.paths.app_log == tmp_path / "logs" / "app.log"
    assert s.paths.pid_file(8000).parent == tmp_path / "run"


@pytest.mark.parametrize(
    "flags, words",
    [
        (
            {"port": "eighty"},
            "port = 'eighty' (set by --port) is not valid: expected a whole number",
        ),
        ({"port": "70000"}, "expected a port from 1 to 65535"),
        ({"kv_bits": "7"}, "expected one of 0, 2, 3, 4, 5, 6, 8"),
        ({"prompt_cache_bytes": "lots"}, "expected a size, such as 8GB or 512MiB"),
    ],
)
def test_bad_values_name_the_key_and_origin(tmp_path, flags, words):
    with pytest.raises(UserError, match=words.replace("(", r"\(").replace(")", r"\)")):
        config.load(flags, {}, paths_at(tmp_path))


def test_unknown_key_in_file_is_refused(tmp_path):
    with pytest.raises(UserError, match="unknown key"):
        config.load({}, {}, paths_at(tmp_path, "prot = 1\n"))


def test_sizes():
    assert config.parse_size("8GB") == 8 * 10**9
    assert config.parse_size("512MiB") == 512 * 2**20
    assert config.parse_size(1024) == 1024
    assert config.human_size(16 * 2**30) == "16GiB"


def test_committed_example_documents_every_key_at_its_default(tmp_path):
    text = (REPO / "server.toml").read_text()
    assert text == config_docs.example_file(), "run scripts/sync-docs.sh"
    # Uncommented, the example loads and gives exactly the defaults.
    lines = [
        line[2:]
        for line in text.splitlines()
        if line.startswith("# ") and " = " in line and line[2:3].isalpha()
    ]
    s = config.load({}, {}, paths_at(tmp_path, "\n".join(lines) + "\n"))
    assert {k.name for k in config.KEYS} <= {line.split(" = ")[0] for line in lines}
    for key in config.KEYS:
        assert getattr(s, key.name) == key.default, key.name


def test_describe_shows_origins_and_hides_the_key(tmp_path):
    s = config.load({"api_key": "sekrit"}, {}, paths_at(tmp_path))
    text = config.describe(s)
    assert "sekrit" not in text and "(set)" in text
    assert "# set by --api-key" in text


def test_readme_configuration_table_is_current():
    text = (REPO / "README.md").read_text()
    assert config_docs.markdown_table() in text, "run scripts/sync-docs.sh"


def _fits(value, hint) -> bool:
    """value is of the annotated type (exactly: a bool is not an int here)."""
    if typing.get_origin(hint) is typing.Literal:
        return value in typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    return type(value) is hint


def test_every_key_is_a_typed_field(tmp_path):
    hints = typing.get_type_hints(config.Settings)  # every annotation resolves
    assert [k.name for k in config.KEYS] == [
        f.name for f in dataclasses.fields(config.Settings) if f.name not in ("origins", "paths")
    ]
    # Each key given as text (its environment variable) reads back as its own type.
    env = {k.env: str(k.default) for k in config.KEYS}
    s = config.load({}, env, paths_at(tmp_path))
    for key in config.KEYS:
        assert _fits(key.default, hints[key.name]), key.name
        assert key.parse(key.default) == key.default, key.name
        assert _fits(getattr(s, key.name), hints[key.name]), key.name
        assert getattr(s, key.name) == key.default, key.name


def test_settings_are_frozen(tmp_path):
    s = config.load({}, {}, paths_at(tmp_path))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.port = 9000
    with pytest.raises(AttributeError):
        _ = s.prot  # a typo is an error, not a silent default


def test_replace_keeps_origins_and_refuses_a_misspelt_key(tmp_path):
    s = config.load({"port": "8100"}, {"MLX_NATIVE_SERVER_HOST": "127.0.0.2"}, paths_at(tmp_path))
    t = s.replace(max_tokens=4096)
    assert (t.max_tokens, t.origin("max_tokens")) == (4096, "set by the program")
    assert (t.port, t.origin("port")) == (8100, "set by --port")
    assert (t.host, t.origin("host")) == ("127.0.0.2", "set by MLX_NATIVE_SERVER_HOST")
    assert (s.max_tokens, s.origin("max_tokens")) == (120000, "default")  # s itself unchanged
    with pytest.raises(TypeError, match="max_tokns"):
        s.replace(max_tokns=4096)
    with pytest.raises(TypeError, match="paths"):
        s.replace(paths=s.paths)  # not a key: replace() changes keys only


def test_a_field_declared_without_key_is_refused():
    @dataclasses.dataclass(frozen=True)
    class Loose:
        port: int = 8000  # no key(): no help, no flag, no env name

    with pytest.raises(TypeError, match="Loose.port"):
        config_values.keys_of(Loose)
