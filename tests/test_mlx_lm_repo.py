"""./setup-mlx-lm-repo.sh against the real mlx-lm sdists from PyPI (issue 7).

The sdists are downloaded once into the sdist cache (CI keeps
~/.cache/mlx-native-server/sdists, or $MLX_NATIVE_SERVER_SDIST_CACHE, between
runs). Installs go into a throwaway venv that sees the project venv's
packages through a .pth file, so the project venv is never touched.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import REPO, hermetic_env
from mlx_native_server.core.errors import UserError
from mlx_native_server.upstream import install as mlx_lm_install
from mlx_native_server.upstream import patch_queue
from mlx_native_server.upstream.source import sdist_cache, version_from_describe

DATA = Path(__file__).parent / "data" / "patches"
PIN = mlx_lm_install.pinned_version(REPO / "pyproject.toml")
OTHER = "0.32.1"  # the release before the pin: the --check target
SAMPLES = [
    "0001-sample-marker.patch",
    "0002-sample-vision-comment.patch",
    "0003-sample-reasoning-comment.patch",
]


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A venv of its own whose site-packages come first, then the project's."""
    path = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    site = subprocess.run(
        [
            str(path / "bin" / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    parent = sysconfig.get_paths()["purelib"]
    Path(site, "_project_venv.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    return path


@pytest.fixture(scope="module", autouse=True)
def project_venv_untouched():
    """The project venv's mlx-lm is the same after these tests as before."""

    def fingerprint() -> str:
        import mlx_lm

        root = Path(mlx_lm.__file__).parent
        files = sorted(root.glob("*.py")) + sorted(root.parent.glob("mlx_lm-*.dist-info/RECORD"))
        return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()

    before = fingerprint()
    yield
    assert fingerprint() == before


def queue(tmp_path: Path, *names: str) -> Path:
    """A patch queue directory holding the named test patches, in order."""
    path = tmp_path / "patches"
    path.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(DATA / name, path / name)
    (path / "series").write_text("# test queue\n" + "".join(f"{n}\n" for n in names))
    return path


def mlx_lm_cmd(venv: Path, home: Path, *args: str) -> subprocess.CompletedProcess:
    """The verb behind ./setup-mlx-lm-repo.sh, aimed at the throwaway venv."""
    home.mkdir(parents=True, exist_ok=True)
    env = hermetic_env(
        home, MLX_NATIVE_SERVER_VENV=str(venv), MLX_NATIVE_SERVER_SDIST_CACHE=str(sdist_cache())
    )
    return subprocess.run(
        [sys.executable, "-m", "mlx_native_server", "mlx-lm", *args],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=300,
    )


def imported(venv: Path) -> str:
    """mlx_lm's version and marker as the venv's Python sees them."""
    code = (
        "import mlx_lm, mlx_lm.server; "
        "print(mlx_lm.__version__, getattr(mlx_lm, 'PATCHED_BY_MLX_NATIVE_SERVER', '-'))"
    )
    r = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def one_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def installed(venv, tmp_path_factory):
    """The sample queue installed from the pinned sdist: (home, patches, output).
    Shared to keep the builds few; the reset test, last, puts the wheel back."""
    root = tmp_path_factory.mktemp("installed")
    patches = queue(root, *SAMPLES)
    result = mlx_lm_cmd(venv, root / "home", "--patches", str(patches))
    return root / "home", patches, ok(result)


def test_issue7_sample_patches_apply_install_and_import(venv, installed):
    home, patches, out = installed
    assert "0001-sample-marker.patch             applies cleanly" in out
    assert "0002-sample-vision-comment.patch     applies cleanly" in out
    # Made against 0.32.1, whose nearby line 0.32.2 changed: only the
    # three-way merge (with 0.32.1's files at hand) gets it in.
    assert "0003-sample-reasoning-comment.patch  applies with a three-way merge" in out
    version, marker = imported(venv).split()
    assert version.startswith(f"{PIN}+patched3.g") and marker == "sample"

    status = ok(mlx_lm_cmd(venv, home, "--status", "--patches", str(patches)))
    assert f"mlx-lm {version} in {venv}" in status
    assert f"PyPI sdist mlx-lm=={PIN}" in status
    assert "0003-sample-reasoning-comment.patch (merged)" in status
    log = subprocess.run(
        ["git", "-C", str(home / "mlx-lm-repo"), "log", "--format=%s"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert len(log) == 4 and log[-1] == f"mlx-lm {PIN} (pristine PyPI sdist)"


def test_issue7_conflicting_patch_fails_cleanly_and_keeps_the_install(venv, installed, tmp_path):
    home = installed[0]
    before = imported(venv)
    head = home / "mlx-lm-repo" / ".git" / "refs" / "heads" / "patched"
    built = head.read_text()

    bad = queue(tmp_path, SAMPLES[0], "conflict-modelopt.patch")
    error = one_error(mlx_lm_cmd(venv, home, "--patches", str(bad)))
    assert "conflict-modelopt.patch conflicts in mlx_lm/utils.py" in error
    assert "current mlx-lm is unchanged" in error
    assert imported(venv) == before
    assert head.read_text() == built
    assert "<<<<<<<" not in (home / "mlx-lm-repo" / "mlx_lm" / "utils.py").read_text()


def test_issue7_check_reports_each_patch_against_another_version(venv, tmp_path):
    home = tmp_path / "home"
    before = imported(venv)
    result = mlx_lm_cmd(venv, home, "--check", OTHER, "--patches", str(queue(tmp_path, *SAMPLES)))
    assert "1 of 3 patch(es) do not apply to mlx-lm 0.32.1" in one_error(result)
    assert "0001-sample-marker.patch             applies cleanly" in result.stdout
    assert "0002-sample-vision-comment.patch     conflicts in mlx_lm/utils.py" in result.stdout
    assert "0003-sample-reasoning-comment.patch  applies cleanly" in result.stdout
    assert imported(venv) == before and not (home / "mlx-lm-repo").exists()


def test_check_keep_leaves_the_conflict_for_resolving(venv, tmp_path):
    keep = tmp_path / "rebase"
    result = mlx_lm_cmd(
        venv,
        tmp_path / "home",
        "--check",
        OTHER,
        "--keep",
        str(keep),
        "--patches",
        str(queue(tmp_path, *SAMPLES)),
    )
    assert "0002-sample-vision-comment.patch does not apply" in one_error(result)
    assert "<<<<<<<" in (keep / "mlx_lm" / "utils.py").read_text()
    assert "Base: mlx-lm 0.32.1" in (keep / ".git" / "MERGE_MSG").read_text()
    assert "git commit --no-edit" in result.stdout


def test_check_against_a_git_ref(venv, tmp_path):
    """A git source: the version comes from the tags (git describe)."""
    import tarfile

    from mlx_native_server.upstream.source import fetch_sdist

    with tarfile.open(fetch_sdist(PIN, sdist_cache())) as tf:
        tf.extractall(tmp_path, filter="data")
    src = tmp_path / f"mlx_lm-{PIN}"
    env = {
        **hermetic_env(tmp_path),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    for args in (
        ["init", "-q", "-b", "main"],
        ["add", "-A"],
        ["commit", "-qm", "release"],
        ["tag", f"v{PIN}"],
        ["commit", "-q", "--allow-empty", "-m", "on main"],
    ):
        subprocess.run(["git", "-C", str(src), *args], env=env, check=True)
    result = mlx_lm_cmd(
        venv,
        tmp_path / "home",
        "--check",
        "--git",
        str(src),
        "--ref",
        "main",
        "--patches",
        str(queue(tmp_path, *SAMPLES)),
    )
    out = ok(result)
    bumped = PIN.rsplit(".", 1)[0] + "." + str(int(PIN.rsplit(".", 1)[1]) + 1)
    assert f"against mlx-lm {bumped}.dev1+g" in out and "all 3 patch(es) apply" in out


def test_tree_with_local_changes_is_not_replaced_without_force(venv, installed):
    home, patches, _ = installed
    edited = home / "mlx-lm-repo" / "mlx_lm" / "server.py"
    edited.write_text(edited.read_text() + "\n# my change\n")
    assert "uncommitted changes" in one_error(mlx_lm_cmd(venv, home, "--patches", str(patches)))
    assert "# my change" in edited.read_text()
    ok(mlx_lm_cmd(venv, home, "--patches", str(patches), "--force"))
    assert "# my change" not in edited.read_text()
    assert imported(venv).endswith("sample")


def test_the_project_series_applies_to_the_pinned_version(venv, tmp_path):
    out = ok(mlx_lm_cmd(venv, tmp_path / "home", "--check", PIN))
    assert f"apply to mlx-lm {PIN}" in out


def test_help_prints_usage(tmp_path):
    r = subprocess.run(
        [str(REPO / "setup-mlx-lm-repo.sh"), "--help"],
        env=hermetic_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and "--check" in r.stdout and "--reset" in r.stdout


def test_reset_goes_back_to_the_pinned_wheel(venv, installed):
    """Last of the venv tests: it takes the source install away."""
    home = installed[0]
    assert imported(venv).endswith("sample")
    assert f"mlx-lm {PIN}, the release wheel" in ok(mlx_lm_cmd(venv, home, "--reset"))
    assert imported(venv) == f"{PIN} -"
    status = ok(mlx_lm_cmd(venv, home, "--status"))
    assert "release wheel" in status and "patches:  none" in status


# -- pure parts --------------------------------------------------------------------


def test_every_patch_says_why_and_its_upstream_status(tmp_path):
    text = (DATA / SAMPLES[0]).read_text().replace("Upstream:", "Elsewhere:")
    (tmp_path / "x.patch").write_text(text)
    with pytest.raises(UserError, match="no 'Upstream:' line"):
        patch_queue.read_patch(tmp_path / "x.patch", "x.patch")


def test_format_patch_headers_are_read():
    p = patch_queue.read_patch(DATA / SAMPLES[2], SAMPLES[2])
    assert p.subject == "Comment the reasoning transition (test sample)"
    assert p.base == "0.32.1" and p.upstream.startswith("not for upstream")


def test_series_skips_comments_and_names_a_missing_patch(tmp_path):
    (tmp_path / "series").write_text("# none yet\n\n")
    assert patch_queue.read_series(tmp_path) == []
    (tmp_path / "series").write_text("gone.patch  # left over\n")
    with pytest.raises(UserError, match="names 'gone.patch'"):
        patch_queue.read_series(tmp_path)


def test_git_apply_output_names_the_files():
    output = (
        "error: patch failed: mlx_lm/server.py:12\nerror: mlx_lm/server.py: patch does "
        "not apply\nApplied patch to 'mlx_lm/utils.py' with conflicts.\nU mlx_lm/utils.py\n"
    )
    assert patch_queue.failed_files(output) == ("mlx_lm/server.py", "mlx_lm/utils.py")


def test_versions():
    assert version_from_describe("v0.32.2", "abc") == "0.32.2"
    assert version_from_describe("v0.32.2-5-g1a2b3c4", "1a2b3c4d") == "0.32.3.dev5+g1a2b3c4"
    assert mlx_lm_install.build_version("0.32.2", 0, "f" * 40) == "0.32.2"
    assert mlx_lm_install.build_version("0.32.2", 2, "1a2b3c4d") == "0.32.2+patched2.g1a2b3c4"
