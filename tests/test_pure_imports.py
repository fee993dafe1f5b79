"""Pure types import nothing heavy (the issue's goal 3: "the translators, block
and event encoders and their tests import in milliseconds and run without mlx
installed").

Each check runs in a fresh interpreter whose import system refuses mlx,
mlx-lm and the Hugging Face stack as if they were not installed; a refused
import names the chain of modules that asked for it. Import times are printed
(`pytest -s` shows them), never asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO

# Not installed, as far as a pure module can tell. numpy is refused too, except
# for the modules in NEEDS_NUMPY.
HEAVY = ("mlx", "mlx_lm", "transformers", "tokenizers", "safetensors", "huggingface_hub", "torch")
NUMPY = ("numpy",)

# The request and event types, the translators and encoders over them, the
# front ends that format engine events, and the pure cores.
PURE = [
    "engine.types",
    "engine.generation",
    "api.errors",
    "api.reasoning",
    "api.prompt_normalize",
    "api.anthropic.translate",
    "api.anthropic.blocks",
    "api.responses.translate",
    "api.responses.events",
    "api.openai.chat",
    "api.anthropic.frontend",
    "api.responses.frontend",
    "api.streaming",
    "api.channel",
    "memory.plan",
    "service.render",
]
# The cache policy ranks entries with numpy, but never touches mlx.
NEEDS_NUMPY = ["cache.policy"]
# core/ is "standard library only" (its package docstring): every module in it.
CORE = sorted(
    f"core.{p.stem}"
    for p in (REPO / "mlx_native_server" / "core").glob("*.py")
    if p.stem != "__init__"
)
# Python 3.10's stand-in for tomllib is the one package core may import.
CORE_MAY_IMPORT = {"tomli"}

# The translator and pure-core tests, run as a whole with HEAVY and numpy refused.
PURE_TESTS = [
    "tests/test_anthropic_translate.py",
    "tests/test_responses_translate.py",
    "tests/test_reasoning.py",
    "tests/test_prompt_normalize.py",
    "tests/test_service_render.py",
    "tests/test_config.py",
]
# Tokenizes with the demo model, so it needs mlx-lm: it runs in the normal suite.
NEEDS_MLX = [
    "tests/test_prompt_normalize.py::"
    "test_requests_differing_only_in_the_billing_line_give_identical_tokens",
]

# Source run first in each child interpreter: `block(names)` installs a finder
# that raises ModuleNotFoundError for those top-level packages.
BLOCKER = '''
import sys

class _Refuse:
    def __init__(self, names):
        self.names = frozenset(names)

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] not in self.names:
            return None
        raise ModuleNotFoundError(f"{name} is blocked; imported by {_chain()}", name=name)

def _chain():
    """The modules (and functions) being run, outermost first."""
    steps, frame = [], sys._getframe(2)
    while frame is not None:
        module = frame.f_globals.get("__name__", "?")
        if not module.startswith(("importlib", "_pytest", "pluggy")):
            code = frame.f_code.co_name
            steps.append(module if code == "<module>" else f"{module}.{code}()")
        frame = frame.f_back
    return " -> ".join(reversed(steps))

def block(names):
    loaded = sorted(n for n in sys.modules if n.partition(".")[0] in names)
    assert not loaded, f"imported before the block: {loaded}"
    sys.meta_path.insert(0, _Refuse(names))
'''

IMPORT_ONE = """
import importlib, json, time
block(REFUSED)
before = set(sys.modules)
start = time.perf_counter()
importlib.import_module("mlx_native_server." + MODULE)
elapsed = time.perf_counter() - start
added = {n.partition(".")[0] for n in set(sys.modules) - before}
third_party = sorted(added - set(sys.stdlib_module_names) - {"mlx_native_server"})
print(json.dumps({"ms": round(elapsed * 1000, 1), "third_party": third_party}))
"""


def run_child(source: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run BLOCKER then `source` in a fresh interpreter in the repository."""
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + source],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def import_blocked(module: str, refused: tuple[str, ...]) -> dict:
    """Import mlx_native_server.<module> with `refused` blocked; its time and
    the third-party packages it loaded. Fails with the child's traceback."""
    source = f"REFUSED = {refused!r}\nMODULE = {module!r}\n" + IMPORT_ONE
    r = run_child(source)
    assert r.returncode == 0, f"importing {module} without {', '.join(refused)}:\n{r.stderr}"
    result = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"\n  {module}: {result['ms']} ms, third-party: {result['third_party'] or 'none'}")
    return result


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_without_mlx_or_numpy(module):
    import_blocked(module, HEAVY + NUMPY)


@pytest.mark.parametrize("module", NEEDS_NUMPY)
def test_cache_policy_imports_without_mlx(module):
    import_blocked(module, HEAVY)


@pytest.mark.parametrize("module", CORE)
def test_core_imports_the_standard_library_only(module):
    result = import_blocked(module, HEAVY + NUMPY)
    assert set(result["third_party"]) <= CORE_MAY_IMPORT, result["third_party"]


def test_translator_tests_pass_without_mlx(tmp_path):
    """The pure tests themselves, in a child pytest that cannot import mlx."""
    deselect = [arg for test in NEEDS_MLX for arg in ("--deselect", test)]
    args = [
        "-q",
        "-p",
        "no:cacheprovider",
        f"--basetemp={tmp_path / 'child'}",
        *PURE_TESTS,
        *deselect,
    ]
    source = f"block({HEAVY + NUMPY!r})\nimport pytest\nsys.exit(pytest.main({args!r}))\n"
    r = run_child(source, timeout=300)
    out = r.stdout + r.stderr
    print("\n" + out.strip().splitlines()[-1])
    assert r.returncode == 0, out
    assert " passed" in out and "deselected" in out, out
