"""The generated demo model: mlx-lm loads, templates, parses and serves it."""

from __future__ import annotations

import json
import time

import pytest

from mlx_native_server.commands import demo as demo_cmd
from mlx_native_server.core.errors import UserError
from mlx_native_server.models.demo import generate, write_hf_checkpoint
from mlx_native_server.models.demo_tokenizer import ANSWER_SCRIPT, EOS, THINK_SCRIPT

SCRIPTED_REPLY = THINK_SCRIPT + "</think>" + ANSWER_SCRIPT
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("models") / "demo", progress=lambda _: None)


@pytest.fixture(scope="module")
def loaded(demo_dir):
    from mlx_lm import load

    return load(str(demo_dir))


def _chat_prompt(tokenizer, messages, **kwargs):
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, **kwargs)


def _reply(model, tokenizer, prompt, **kwargs):
    from mlx_lm import stream_generate

    responses = list(stream_generate(model, tokenizer, prompt, max_tokens=100, **kwargs))
    return "".join(r.text for r in responses), responses[-1].finish_reason


def test_writes_a_marked_mlx_model_quickly(tmp_path):
    start = time.monotonic()
    path = generate(tmp_path / "demo", progress=lambda _: None)
    assert time.monotonic() - start < 10
    marker = json.loads((path / "demo-model.json").read_text())
    assert "random text" in marker["about"]
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "minimax" and config["use_qk_norm"]
    assert (path / "model.safetensors").stat().st_size < 4_000_000
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]  # no temp dirs left


def test_tokenizer_is_minimax_shaped(loaded):
    model, tok = loaded
    assert tok.has_tool_calling and tok.tool_parser.__module__ == "mlx_lm.tool_parsers.minimax_m2"
    assert tok.tool_call_start == "<minimax:tool_call>"
    assert tok.has_thinking and (tok.think_start, tok.think_end) == ("<think>", "</think>")
    assert tok.convert_tokens_to_ids(EOS) in tok.eos_token_ids
    assert model.args.vocab_size == len(tok.get_vocab())
    for marker in ("<think>", "</think>", "<minimax:tool_call>", "</minimax:tool_call>"):
        ids = tok.encode(marker, add_special_tokens=False)
        assert len(ids) == 1 and tok.decode(ids, skip_special_tokens=True) == marker


def test_any_text_round_trips(demo_dir, loaded):
    from tokenizers import Tokenizer

    _, tok = loaded
    text = 'héllo 世界 🙂 {"a": [1, 2]}\n\tdef f(x):\n        return x ** 2  # done'
    ids = tok.encode(text, add_special_tokens=False)
    assert ids == Tokenizer.from_file(str(demo_dir / "tokenizer.json")).encode(text).ids
    assert tok.decode(ids) == text


def test_chat_template_renders_tools_and_history(loaded):
    _, tok = loaded
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
    }
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    text = _chat_prompt(tok, messages, tools=[WEATHER_TOOL], tokenize=False)
    assert '<invoke name="get_weather">' in text and "<tool>" in text
    assert text.startswith("]~!b[]~b]system") and text.endswith("]~b]ai\n<think>\n")


@pytest.mark.parametrize("kv", [{}, {"kv_bits": 4, "kv_group_size": 64, "quantized_kv_start": 0}])
def test_greedy_reply_is_the_script_and_stops(loaded, kv):
    model, tok = loaded
    prompt = _chat_prompt(tok, [{"role": "user", "content": "Hi there"}], tools=[WEATHER_TOOL])
    assert _reply(model, tok, prompt, **kv) == (SCRIPTED_REPLY, "stop")


def test_plain_generate_produces_text(loaded):
    from mlx_lm import generate as mlx_generate

    model, tok = loaded
    assert mlx_generate(model, tok, "Once upon a time", max_tokens=8)


def test_is_idempotent_and_deterministic(tmp_path, demo_dir):
    messages = []
    path = generate(tmp_path / "demo", progress=messages.append)
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    generate(path, progress=messages.append)
    assert "already" in messages[-1] and (path / "model.safetensors").stat().st_mtime_ns == mtime
    generate(path, force=True, progress=messages.append)
    assert "wrote" in messages[-1]
    weights = (demo_dir / "model.safetensors").read_bytes()
    assert (path / "model.safetensors").read_bytes() == weights  # same seed, same bytes
    generate(path, seed=1, progress=messages.append)
    assert (path / "model.safetensors").read_bytes() != weights


def test_refuses_to_replace_another_directory(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "weights.bin").write_text("precious")
    with pytest.raises(UserError, match="not a demo model"):
        generate(tmp_path / "mine", force=True, progress=lambda _: None)
    assert (tmp_path / "mine" / "weights.bin").read_text() == "precious"


def test_hf_checkpoint_converts_at_4_bits(tmp_path):
    import mlx.core as mx
    from mlx_lm import convert, load

    hf = write_hf_checkpoint(tmp_path / "hf")
    weights = mx.load(str(hf / "model.safetensors"))
    assert weights["model.layers.1.block_sparse_moe.experts.3.w2.weight"].dtype == mx.bfloat16
    convert(hf_path=str(hf), mlx_path=str(tmp_path / "q4"), quantize=True, q_bits=4)
    assert json.loads((tmp_path / "q4" / "config.json").read_text())["quantization"]["bits"] == 4
    model, tok = load(str(tmp_path / "q4"))
    prompt = _chat_prompt(tok, [{"role": "user", "content": "Hi"}])
    kv = {"kv_bits": 4, "kv_group_size": 64, "quantized_kv_start": 0}
    assert _reply(model, tok, prompt, **kv) == (SCRIPTED_REPLY, "stop")


def test_cli_writes_under_the_home_with_a_banner(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLX_NATIVE_SERVER_HOME", str(tmp_path))
    assert demo_cmd.main([]) == 0
    assert (tmp_path / "local-models" / "demo" / "demo-model.json").is_file()
    assert "random text" in capsys.readouterr().out
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("")
    assert demo_cmd.main(["--path", "other"]) == 1
    assert "not a demo model" in capsys.readouterr().err
