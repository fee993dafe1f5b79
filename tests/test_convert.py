"""./convert-model.sh on a tiny MiniMax checkpoint in Hugging Face layout,
generated offline (issue 7): conversion, the quantization rule, the server,
and every failure as one sentence that leaves no output behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mlx_native_server import model_source
from mlx_native_server.convert import quantization_summary
from mlx_native_server.demo_model import write_hf_checkpoint
from mlx_native_server.errors import UserError

from conftest import free_port

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


def test_issue7_tiny_minimax_converts_at_4_bits_loads_and_serves(checkpoint, script,
                                                                  start_server, tmp_path):
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
    for text in ("[1/4]", "[4/4]", "sample:", "on disk", "8 bits",
                 f'model = "local-models/{out.name}"', f"--model local-models/{out.name}"):
        assert text in result.stdout, result.stdout

    import openai

    with start_server(model=out) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="unused", max_retries=0)
        reply = client.chat.completions.create(
            model="mlx-local", messages=[{"role": "user", "content": "Hello"}], max_tokens=16)
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

    forced = convert(script, home, str(checkpoint), "--bits", "8", "--name", "Tiny",
                     "--force", "--no-verify")
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


@pytest.mark.parametrize("damage, needle", [
    ("config", "no config.json"),
    ("weights", "no *.safetensors"),
    ("shard", "lacks 1 of the 2 weight files"),
    ("tokenizer", "no tokenizer"),
])
def test_missing_files_are_one_sentence(broken, script, tmp_path, damage, needle):
    if damage == "config":
        (broken / "config.json").unlink()
    elif damage == "weights":
        (broken / "model.safetensors").unlink()
    elif damage == "shard":
        weights = {"model.embed_tokens.weight": "model-00001-of-00002.safetensors",
                   "lm_head.weight": "model-00002-of-00002.safetensors"}
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
    offline = {"HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"),
               "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"}  # nothing listens there
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
    config = {"quantization": {"bits": 4, "group_size": 64, "mode": "affine",
                               "model.layers.0.block_sparse_moe.gate": gate,
                               "model.layers.1.block_sparse_moe.gate": gate}}
    assert quantization_summary(config) == (
        "4 bits, group size 64; 2 layer(s) at 8 bits (e.g. model.layers.0.block_sparse_moe.gate)")


def test_hub_ids_and_paths_are_told_apart(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert model_source.looks_like_hub_id("cerebras/MiniMax-M2.1-REAP-50")
    (tmp_path / "cerebras" / "MiniMax").mkdir(parents=True)
    assert not model_source.looks_like_hub_id("cerebras/MiniMax")  # an existing path wins
    assert not model_source.looks_like_hub_id("./a/b")
    assert model_source.default_name("/models/MiniMax-M2.1/") == "MiniMax-M2.1"
