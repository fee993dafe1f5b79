"""The door to mlx-lm is sealed: only mlx_native_server/adapter/ imports
mlx_lm, and adapter/contract.py names every upstream name and signature it
relies on, so a new mlx-lm fails in seconds with the name that moved (at
./setup-mlx-lm-repo.sh time, before anything is installed)."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from conftest import REPO
from mlx_native_server.adapter import contract
from mlx_native_server.adapter.checks import Attr, Call, Global, Reads, Uses
from mlx_native_server.core.errors import UserError
from mlx_native_server.upstream import install

PACKAGE = REPO / "mlx_native_server"


def test_the_installed_mlx_lm_has_every_name_the_adapter_uses():
    assert contract.problems() == []


def test_the_contract_runs_as_a_module_and_exits_0():
    r = subprocess.run(
        [sys.executable, "-m", "mlx_native_server.adapter.contract"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("mlx-lm ") and "every name the adapter uses is present" in r.stdout


FAKE = """
class ResponseGenerator:
    def __init__(self):
        self.requests = []

    def _tokenize(self, tokenizer, prompt, args):
        return stream_generate(prompt)

    def _serve_single(self):
        return "no call of the patched global here"


def stream_generate(prompt):
    return prompt


cli_args = None
def _read():
    return cli_args.model, cli_args.new_flag
"""


@pytest.fixture
def fake_upstream(tmp_path, monkeypatch):
    """A module shaped like an mlx-lm whose names moved."""
    (tmp_path / "fake_upstream.py").write_text(textwrap.dedent(FAKE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "fake_upstream"
    sys.modules.pop("fake_upstream", None)


def test_each_kind_of_move_is_reported_by_name(fake_upstream):
    m = fake_upstream
    table = (
        Attr(m, "ResponseGenerator._await_response"),
        Attr(m, "ResponseGenerator.requests", instance=True),
        Attr(m, "ResponseGenerator._is_distributed", instance=True),
        Call(m, "ResponseGenerator._tokenize", args=("tokenizer", "request", "args")),
        Call(m, "stream_generate", kwargs=("max_tokens",)),
        Global(m, "stream_generate", caller="ResponseGenerator._serve_single"),
        Uses(m, "ResponseGenerator._serve_single", "rqueue.put(", "the progress protocol"),
        Reads(m, r"\bcli_args\.(\w+)", ("model",), "our Namespace"),
        Attr("no_such_module_of_mlx_lm", "thing"),
    )
    found = contract.problems(table, importlib.import_module)
    assert found == [
        "fake_upstream.ResponseGenerator._await_response is missing",
        "fake_upstream.ResponseGenerator._is_distributed is missing (no dataclass field and "
        "no 'self._is_distributed =' in ResponseGenerator's source)",
        "fake_upstream.ResponseGenerator._tokenize: the adapter passes 'request' as argument 2, "
        "upstream now takes prompt there (signature (self, tokenizer, prompt, args))",
        "fake_upstream.stream_generate has no parameter 'max_tokens' (signature (prompt))",
        "fake_upstream.ResponseGenerator._serve_single no longer calls stream_generate(), so "
        "replacing fake_upstream.stream_generate does nothing",
        "fake_upstream.ResponseGenerator._serve_single no longer has `rqueue.put(` "
        "(the progress protocol)",
        "fake_upstream reads 'new_flag' off our Namespace, which does not set it",
        found[-1],
    ]
    assert found[-1].startswith("no_such_module_of_mlx_lm does not import (ModuleNotFoundError")


def test_a_changed_signature_of_the_real_mlx_lm_is_reported():
    row = Call("mlx_lm.models.cache", "trim_prompt_cache", args=("cache", "n_tokens"))
    (problem,) = contract.problems((row,))
    assert problem.startswith(
        "mlx_lm.models.cache.trim_prompt_cache: the adapter passes "
        "'n_tokens' as argument 2, upstream now takes num_tokens there"
    )


def test_the_namespace_and_the_prompt_cache_give_upstream_what_it_reads(demo_model, tmp_path):
    from mlx_native_server.adapter.server import _cli_args
    from mlx_native_server.cache.store import PromptCacheStore
    from mlx_native_server.core import config
    from mlx_native_server.core.paths import Paths

    paths = Paths(home=tmp_path, config_file=tmp_path / "server.toml", log_dir=tmp_path / "logs")
    settings = config.load({"model": str(demo_model)}, {}, paths)
    assert sorted(vars(_cli_args(settings, None))) == sorted(contract.CLI_ARGS)
    assert [n for n in contract.PROMPT_CACHE if not hasattr(PromptCacheStore, n)] == []


def _imports(path: Path) -> list[str]:
    """Every module `path` imports, at any depth (relative ones resolved)."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            found.append(module)
    return found


def test_no_module_outside_the_adapter_imports_mlx_lm():
    outside = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name == "adapter" and path.parent.parent == PACKAGE:
            continue
        upstream = [m for m in _imports(path) if m == "mlx_lm" or m.startswith("mlx_lm.")]
        if upstream:
            outside[str(path.relative_to(REPO))] = upstream
    assert outside == {}
    assert any(m.startswith("mlx_lm") for m in _imports(PACKAGE / "adapter" / "server.py"))


def test_generation_imports_no_mlx():
    code = (
        "import sys, mlx_native_server.engine.generation; "
        "sys.exit(any(m == 'mlx' or m.startswith(('mlx.', 'mlx_lm')) for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_a_build_that_moved_names_is_refused_before_installing(tmp_path):
    """check_import (what ./setup-mlx-lm-repo.sh runs on each wheel) names
    what moved; here a wheel whose mlx_lm has a server without the engine."""
    wheel = tmp_path / "mlx_lm-9.9.9-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("mlx_lm/__init__.py", '__version__ = "9.9.9"\n')
        zf.writestr("mlx_lm/server.py", "class ModelProvider:\n    pass\n")
        zf.writestr("mlx_lm/convert.py", "def convert(hf_path, mlx_path):\n    pass\n")
    (tmp_path / "work").mkdir()
    with pytest.raises(UserError) as e:
        install.check_import(wheel, tmp_path / "work", Path(sys.executable))
    message = str(e.value)
    assert message.startswith("mlx-lm 9.9.9 moved ") and "\n" not in message
    assert "mlx_lm.server.ResponseGenerator is missing" in message
    assert "mlx_lm.convert.convert has no parameter 'quantize'" in message
    assert message.endswith(
        "the adapter in mlx_native_server/adapter/ must follow; the current install is unchanged"
    )
