"""./convert-model.sh on a tiny MiniMax checkpoint in Hugging Face layout,
generated offline (issue 7): conversion, the quantization rule, the server,
and every failure as one sentence that leaves no output behind. And on the
same model already quantized by mlx-lm (an MLX source, as mlx-community
publishes them): installed as is, not converted again."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import types
from pathlib import Path

import pytest

from conftest import free_port
from mlx_native_server.commands import convert as convert_cmd
from mlx_native_server.core.errors import UserError
from mlx_native_server.core.paths import Paths
from mlx_native_server.memory import plan as memory_plan
from mlx_native_server.models import source as model_source
from mlx_native_server.models.convert import quantization_summary
from mlx_native_server.models.convert import run as convert_run
from mlx_native_server.models.demo import write_hf_checkpoint

NAME = "MiniMax-Tiny"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """Per-expert w1/w2/w3 weights in bfloat16, model_type minimax_m2."""
    return write_hf_checkpoint(tmp_path_factory.mktemp("hf") / NAME)


@pytest.fixture
def broken(checkpoint, tmp_path):
    """A copy of the checkpoint to damage."""
    path = tmp_path / "src" / NAME
    shutil.copytree(checkpoint, path)
    return path


def convert(script, home: Path, *args: str, env: dict | None = None):
    home.mkdir(parents=True, exist_ok=True)
    return script("convert-model.sh", *args, home=home, env=env, timeout=300)


def assert_one_sentence(result, *needles: str) -> None:
    """Exit 1, one 'error:' line on stderr carrying the needles, no traceback."""
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def model_dirs(home: Path) -> list[str]:
    """Everything under local-models/, hidden partial directories included."""
    models = home / "local-models"
    return sorted(p.name for p in models.iterdir()) if models.exists() else []


def chat_once(start_server, model_dir):
    """Serve `model_dir` and ask it one question through the openai SDK."""
    import openai

    with start_server(model=model_dir) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="unused", max_retries=0)
        return client.chat.completions.create(
            model="mlx-local", messages=[{"role": "user", "content": "Hello"}], max_tokens=16
        )


def test_issue7_tiny_minimax_converts_at_4_bits_loads_and_serves(
    checkpoint, script, start_server, tmp_path
):
    home = tmp_path / "home"
    result = convert(script, home, str(checkpoint), "--bits", "4")
    assert result.returncode == 0, result.stdout + result.stderr
    out = home / "local-models" / f"{NAME}-MLX-4bit"
    assert model_dirs(home) == [out.name]
    config = json.loads((out / "config.json").read_text())
    quant = config["quantization"]
    assert (quant["bits"], quant["group_size"]) == (4, 64)
    # MiniMax's own predicate: every router gate at 8 bits, the experts at 4.
    gates = {k: v for k, v in quant.items() if k.endswith("block_sparse_moe.gate")}
    assert len(gates) == config["num_hidden_layers"]
    assert all(v["bits"] == 8 for v in gates.values())
    # The progress, the sample, the size and the line that points the server at it.
    for text in (
        "[1/4]",
        "[4/4]",
        "sample:",
        "on disk",
        "8 bits",
        f'model = "local-models/{out.name}"',
        f"--model local-models/{out.name}",
    ):
        assert text in result.stdout, result.stdout

    reply = chat_once(start_server, out)
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens > 0


def test_refuses_to_overwrite_without_force_and_replaces_with_it(checkpoint, script, tmp_path):
    home = tmp_path / "home"
    out = home / "local-models" / "Tiny-MLX-8bit"
    first = convert(script, home, str(checkpoint), "--bits", "8", "--name", "Tiny", "--no-verify")
    assert first.returncode == 0, first.stderr
    (out / "mine.txt").write_text("not from the converter")

    again = convert(script, home, str(checkpoint), "--bits", "8", "--name", "Tiny")
    assert_one_sentence(again, "already exists", "--force")
    assert (out / "mine.txt").exists()

    forced = convert(
        script, home, str(checkpoint), "--bits", "8", "--name", "Tiny", "--force", "--no-verify"
    )
    assert forced.returncode == 0, forced.stderr
    assert not (out / "mine.txt").exists()
    assert json.loads((out / "config.json").read_text())["quantization"]["bits"] == 8
    assert model_dirs(home) == [out.name]


def test_unknown_architecture_is_one_sentence_and_leaves_nothing(broken, script, tmp_path):
    config = json.loads((broken / "config.json").read_text())
    config["model_type"] = "frobnicator"
    (broken / "config.json").write_text(json.dumps(config))
    result = convert(script, tmp_path / "home", str(broken))
    assert_one_sentence(result, "'frobnicator'", "not support", "setup-mlx-lm-repo.sh")
    assert model_dirs(tmp_path / "home") == []


@pytest.mark.parametrize(
    "damage, needle",
    [
        ("config", "no config.json"),
        ("weights", "no *.safetensors"),
        ("shard", "lacks 1 of the 2 weight files"),
        ("tokenizer", "no tokenizer"),
    ],
)
def test_missing_files_are_one_sentence(broken, script, tmp_path, damage, needle):
    if damage == "config":
        (broken / "config.json").unlink()
    elif damage == "weights":
        (broken / "model.safetensors").unlink()
    elif damage == "shard":
        weights = {
            "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
            "lm_head.weight": "model-00002-of-00002.safetensors",
        }
        (broken / "model.safetensors").rename(broken / "model-00001-of-00002.safetensors")
        (broken / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weights}))
    else:
        (broken / "tokenizer.json").unlink()
    result = convert(script, tmp_path / "home", str(broken))
    assert_one_sentence(result, needle)
    assert model_dirs(tmp_path / "home") == []


def test_failure_inside_the_converter_leaves_no_partial_output(broken, script, tmp_path):
    import mlx.core as mx

    weights = mx.load(str(broken / "model.safetensors"))
    del weights["lm_head.weight"]
    mx.save_safetensors(str(broken / "model.safetensors"), weights, metadata={"format": "pt"})
    result = convert(script, tmp_path / "home", str(broken))
    assert_one_sentence(result, "could not convert", "lm_head.weight")
    assert model_dirs(tmp_path / "home") == []


def test_hub_id_without_network_is_one_sentence(script, tmp_path):
    offline = {
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}",
    }  # nothing listens there
    result = convert(script, tmp_path / "home", "MiniMaxAI/MiniMax-M2.1", env=offline)
    assert_one_sentence(result, "could not reach the Hugging Face Hub", "MiniMaxAI/MiniMax-M2.1")
    assert model_dirs(tmp_path / "home") == []


def test_help_prints_usage(script, tmp_path):
    result = script("convert-model.sh", "--help", home=tmp_path)
    assert result.returncode == 0
    assert "--bits" in result.stdout and "--force" in result.stdout


# -- the arithmetic behind the disk check ----------------------------------------


def test_estimate_covers_the_converted_weights(checkpoint, tmp_path):
    from mlx_lm.convert import convert as mlx_convert

    params = model_source.count_parameters(model_source.weight_files(checkpoint))
    estimate = model_source.estimate_output_bytes(params, bits=4, group_size=64)
    mlx_convert(str(checkpoint), str(tmp_path / "out"), quantize=True, q_bits=4, q_group_size=64)
    written = sum(f.stat().st_size for f in (tmp_path / "out").glob("*.safetensors"))
    assert written * 0.8 < estimate < written * 2


def test_estimate_of_a_big_model():
    # 230B weights at 4 bits, group 64: 4.5 bits a weight, plus 10% margin.
    assert model_source.estimate_output_bytes(230 * 10**9, 4, 64) == pytest.approx(142e9, rel=0.01)


def test_too_little_free_space_is_refused_before_converting(tmp_path):
    with pytest.raises(UserError, match="needs about .* free"):
        model_source.check_free_space(tmp_path / "local-models", 10**18, "the 4-bit model")


def test_quantization_summary_names_the_8_bit_gates():
    gate = {"group_size": 64, "bits": 8}
    config = {
        "quantization": {
            "bits": 4,
            "group_size": 64,
            "mode": "affine",
            "model.layers.0.block_sparse_moe.gate": gate,
            "model.layers.1.block_sparse_moe.gate": gate,
        }
    }
    assert quantization_summary(config) == (
        "4 bits, group size 64; 2 layer(s) at 8 bits (e.g. model.layers.0.block_sparse_moe.gate)"
    )


def test_hub_ids_and_paths_are_told_apart(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert model_source.looks_like_hub_id("cerebras/MiniMax-M2.1-REAP-50")
    (tmp_path / "cerebras" / "MiniMax").mkdir(parents=True)
    assert not model_source.looks_like_hub_id("cerebras/MiniMax")  # an existing path wins
    assert not model_source.looks_like_hub_id("./a/b")
    assert model_source.default_name("/models/MiniMax-M2.1/") == "MiniMax-M2.1"


# -- an MLX source, installed as is ----------------------------------------------


@pytest.fixture(scope="module")
def mlx_models(demo_model, tmp_path_factory) -> dict[int, Path]:
    """The demo model (MLX layout, unquantized) quantized once by mlx-lm's own
    converter at 4 and 8 bits: MLX sources as mlx-community publishes them."""
    from mlx_lm.convert import convert as mlx_convert

    assert model_source.local("demo", demo_model).mlx_quantization is None
    root = tmp_path_factory.mktemp("mlx")
    models = {}
    for bits in (4, 8):
        models[bits] = root / f"MiniMax-Tiny-{bits}bit-mlx"
        mlx_convert(str(demo_model), str(models[bits]), quantize=True, q_bits=bits, q_group_size=64)
    return models


def digests(path: Path) -> dict[str, str]:
    """sha256 of each weight file and of config.json, by name."""
    files = [*sorted(path.glob("*.safetensors")), path / "config.json"]
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def test_mlx_4bit_source_is_installed_as_is_under_its_own_name_and_serves(
    mlx_models, script, start_server, tmp_path
):
    src, home = mlx_models[4], tmp_path / "home"
    result = convert(script, home, str(src))
    assert result.returncode == 0, result.stdout + result.stderr
    out = home / "local-models" / src.name
    assert model_dirs(home) == [src.name]
    assert digests(out) == digests(src)  # byte for byte: nothing quantized again
    assert "converting" not in result.stdout and "already MLX (4 bits" in result.stdout
    for text in (
        "[1/4]",
        "[4/4]",
        "installed:",
        "4 bits, group size 64",
        "sample:",
        f'model = "local-models/{src.name}"',
        f"--model local-models/{src.name}",
    ):
        assert text in result.stdout, result.stdout

    assert chat_once(start_server, out).usage.completion_tokens > 0


def test_8bit_mlx_source_stays_8bit_with_its_own_name(mlx_models, script, tmp_path):
    """The report: an 8-bit MLX directory came out 'converted to 4 bits' as
    <name>-MLX-4bit, rewritten, though it held 8 bits."""
    src, home = mlx_models[8], tmp_path / "home"
    result = convert(script, home, str(src), "--bits", "8")  # agreeing with the source is fine
    assert result.returncode == 0, result.stdout + result.stderr
    out = home / "local-models" / src.name
    assert model_dirs(home) == [src.name]
    assert digests(out) == digests(src)
    assert json.loads((out / "config.json").read_text())["quantization"]["bits"] == 8
    assert "4 bits" not in result.stdout and "8 bits, group size 64" in result.stdout


def test_mlx_source_with_other_bits_is_one_sentence_and_leaves_nothing(
    mlx_models, script, tmp_path
):
    result = convert(script, tmp_path / "home", str(mlx_models[8]), "--bits", "4")
    assert_one_sentence(
        result, "already an MLX model quantized at 8 bits", "--bits 4", "installed as is"
    )
    assert model_dirs(tmp_path / "home") == []


def test_name_renames_an_mlx_source(mlx_models, script, tmp_path):
    home = tmp_path / "home"
    result = convert(script, home, str(mlx_models[4]), "--name", "Tiny", "--no-verify")
    assert result.returncode == 0, result.stderr
    assert model_dirs(home) == ["Tiny"]
    assert 'model = "local-models/Tiny"' in result.stdout


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs a second filesystem")
def test_mlx_source_on_another_filesystem_is_copied_with_progress(mlx_models, script, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    other = Path("/dev/shm")
    if other.stat().st_dev == home.stat().st_dev:
        pytest.skip("/dev/shm is on the same filesystem")
    src = other / f"{mlx_models[4].name}-{os.getpid()}"
    shutil.copytree(mlx_models[4], src)
    try:
        result = convert(script, home, str(src), "--no-verify")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "copied" in result.stdout and "(100%)" in result.stdout
        out = home / "local-models" / src.name
        assert digests(out) == digests(src)
        assert out.joinpath("model.safetensors").stat().st_nlink == 1
    finally:
        shutil.rmtree(src)


def test_a_hard_linked_install_uses_no_extra_space(mlx_models, script, tmp_path):
    home = tmp_path / "home"
    result = convert(script, home, str(mlx_models[4]), "--no-verify")
    assert result.returncode == 0, result.stderr
    assert "linked" in result.stdout
    weights = home / "local-models" / mlx_models[4].name / "model.safetensors"
    assert weights.samefile(mlx_models[4] / "model.safetensors")


# -- MLX sources on the Hub, through an HfApi-like object -------------------------


class FakeHub:
    """The HfApi calls the install makes, answered as the Hub would for a
    repository holding the local MLX directory `source`; no network."""

    def __init__(self, source: Path, file_size: int | None = None, error: Exception | None = None):
        self.source, self.file_size, self.error = source, file_size, error
        self.downloads: list[Path] = []

    def _files(self) -> list[Path]:
        return sorted(f for f in self.source.iterdir() if f.is_file())

    def model_info(self, repo_id, *, revision=None, files_metadata=False):
        if self.error:
            raise self.error
        siblings = [
            types.SimpleNamespace(rfilename=f.name, size=self.file_size or f.stat().st_size)
            for f in self._files()
        ]
        return types.SimpleNamespace(siblings=siblings, safetensors=None)

    def hf_hub_download(self, repo_id, filename, *, revision=None):
        return str(self.source / filename)

    def get_safetensors_metadata(self, repo_id, *, revision=None):
        names = model_source.tensors(sorted(self.source.glob("*.safetensors")))
        return types.SimpleNamespace(weight_map=dict.fromkeys(names, "model.safetensors"))

    def snapshot_download(
        self, repo_id, *, revision=None, allow_patterns=None, local_dir=None, local_files_only=False
    ):
        if local_files_only:
            raise FileNotFoundError("not in the cache")
        self.downloads.append(Path(local_dir))
        (Path(local_dir) / ".cache" / "huggingface").mkdir(parents=True)  # as huggingface_hub does
        for f in self._files():
            shutil.copy(f, Path(local_dir) / f.name)
        return str(local_dir)


def hub_install(home: Path, hub: FakeHub, *args: str):
    paths = Paths.from_env({"MLX_NATIVE_SERVER_HOME": str(home)})
    return convert_run(
        convert_cmd.settings_from(["mlx-community/Tiny-4bit", *args], paths), api=hub
    )


def test_mlx_repo_is_downloaded_into_a_hidden_directory_then_installed(mlx_models, tmp_path):
    hub = FakeHub(mlx_models[4])
    done, out, text = hub_install(tmp_path, hub)
    assert done == "installed" and out == tmp_path / "local-models" / "Tiny-4bit"
    assert hub.downloads == [tmp_path / "local-models" / ".Tiny-4bit.download"]
    assert model_dirs(tmp_path) == ["Tiny-4bit"]  # renamed into place, bookkeeping gone
    assert not (out / ".cache").exists()
    assert digests(out) == digests(mlx_models[4]) and text


def test_mlx_repo_too_big_for_the_disk_is_refused_before_downloading(mlx_models, tmp_path):
    hub = FakeHub(mlx_models[4], file_size=10**15)
    # --no-verify: no memory plan (which would refuse a petabyte first), the disk check stays.
    with pytest.raises(UserError, match="downloading mlx-community/Tiny-4bit .* needs about"):
        hub_install(tmp_path, hub, "--no-verify")
    assert hub.downloads == [] and model_dirs(tmp_path) == []
    with pytest.raises(UserError, match="cannot fit: the weights"):  # with it: memory first
        hub_install(tmp_path, hub)
    assert hub.downloads == [] and model_dirs(tmp_path) == []


def test_hub_unreachable_is_one_sentence(mlx_models, tmp_path):
    hub = FakeHub(mlx_models[4], error=ConnectionError("[Errno 111] Connection refused"))
    with pytest.raises(UserError, match="could not reach the Hugging Face Hub"):
        hub_install(tmp_path, hub)
    assert model_dirs(tmp_path) == []


def test_memory_plan_is_asked_before_anything_is_downloaded(mlx_models, tmp_path, monkeypatch):
    asked = []

    def check_model_fits(config, weight_bytes, settings, device):
        asked.append((config, weight_bytes, settings.max_tokens))
        raise UserError("the model needs 70 GB but this machine has 64 GB")

    monkeypatch.setattr(memory_plan, "check_model_fits", check_model_fits)
    hub = FakeHub(mlx_models[4])
    with pytest.raises(UserError, match="needs 70 GB"):
        hub_install(tmp_path, hub)
    weights = (mlx_models[4] / "model.safetensors").stat().st_size
    config = json.loads((mlx_models[4] / "config.json").read_text())
    assert asked == [(config, weights, 120000)]
    assert hub.downloads == [] and model_dirs(tmp_path) == []
    # --no-verify prepares a model for another machine: no memory check.
    assert hub_install(tmp_path, hub, "--no-verify")[0] == "installed"


# -- what is MLX and what is not --------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        {"quantization": {"group_size": 64, "bits": 4}},
        {"quantization_config": {"group_size": 64, "bits": 8, "mode": "affine"}},
    ],
)
def test_mlx_quantization_is_recognised(config):
    assert model_source.mlx_quantization(config)["bits"] in (4, 8)


@pytest.mark.parametrize(
    "config",
    [
        {"quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128}},
        {"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128}},
        {"quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}},
        {},
    ],
)
def test_other_quantization_formats_are_not_mlx(config):
    assert model_source.mlx_quantization(config) is None


def test_mlx_layout_needs_scales_beside_the_weight():
    mlx = [
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.q_proj.scales",
        "model.layers.0.self_attn.q_proj.biases",
    ]
    gptq = [
        "model.layers.0.self_attn.q_proj.qweight",
        "model.layers.0.self_attn.q_proj.scales",
        "model.layers.0.self_attn.q_proj.qzeros",
    ]
    fp8 = [
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.q_proj.weight_scale_inv",
    ]
    assert model_source.has_mlx_layout(mlx)
    assert not model_source.has_mlx_layout(gptq) and not model_source.has_mlx_layout(fp8)


def test_a_gptq_config_on_mlx_weights_is_not_taken_for_mlx(mlx_models, checkpoint, tmp_path):
    assert model_source.local("hf", checkpoint).mlx_quantization is None  # full precision
    src = shutil.copytree(mlx_models[4], tmp_path / "gptq")
    config = json.loads((src / "config.json").read_text())
    del config["quantization"]
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 64}
    (src / "config.json").write_text(json.dumps(config))
    assert model_source.local("gptq", src).mlx_quantization is None
