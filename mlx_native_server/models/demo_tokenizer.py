"""The demo model's tokenizer, and the script its weights recite.

A byte-level BPE trained on a built-in corpus (so any text encodes), with
MiniMax M2's 54 added tokens and its chat template from mlx_native_server/data,
laid out as MiniMax's repository has it. The corpus holds the script, so the
script's tokens are few and distinct: models/demo.py wires them into the
lm_head as the chain greedy decoding walks (`script_chain`). Needs the
`tokenizers` package, imported when a tokenizer is built.
"""

from __future__ import annotations

import json
from importlib import resources

BOS, EOS, UNK = "]~!b[", "[e~[", "]!d~["
THINK_END = "</think>"

THINK_SCRIPT = "The user wrote something, but I am only a demo with random weights..."
ANSWER_SCRIPT = "Hello! This tiny model says one fixed thing: load real MiniMax for useful answers."

BASE_VOCAB = 970  # + 54 added tokens = 1024

_CORPUS = """\
The quick brown fox jumps over the lazy dog. A local server answers requests
from editors, agents and command-line tools. Each request carries messages,
tools and settings such as temperature, top_p and max_tokens; the response
streams tokens back as server-sent events until the model stops.
If the prompt is long, the cache keeps earlier work so the next turn is fast.
Hello, world! How are you today? I think the answer is 42, but let me check.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14 -7 1e-6 2025-01-31 12:30:45.
def add(a: int, b: int) -> int:
    \"\"\"Return the sum of a and b.\"\"\"
    return a + b

for i in range(10):
    if i % 2 == 0:
        print(f"even {i}")
    else:
        continue

class Server:
    def __init__(self, host="127.0.0.1", port=8080):
        self.host, self.port = host, port

function greet(name) { return `Hello, ${name}!`; }
const items = [1, 2, 3].map((x) => x * 2);
$ curl -s http://localhost:8080/v1/chat/completions -H 'Content-Type: application/json'
{"model": "demo", "messages": [{"role": "user", "content": "Hi"}], "stream": true}
{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}
{"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}
[{"id": "call_1", "type": "function", "function": {"name": "search"}}]
null true false <tool> </tool> <parameter name="city">Paris</parameter>
"""


def _data_text(name: str) -> str:
    return (resources.files("mlx_native_server") / "data" / name).read_text("utf-8")


def added_tokens() -> list[dict]:
    """MiniMax M2's 54 added tokens in their real order, with their special flags."""
    return json.loads(_data_text("minimax-m2-added-tokens.json"))["tokens"]


def build_tokenizer(base_vocab: int = BASE_VOCAB):
    """A byte-level BPE trained on a built-in corpus (so any text encodes),
    then MiniMax's added tokens with ids following the base vocabulary."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=base_vocab,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [_CORPUS, THINK_SCRIPT, ANSWER_SCRIPT, _data_text("minimax-m2-chat-template.jinja")]
    tok.train_from_iterator(corpus, trainer)
    for t in added_tokens():  # one at a time keeps the real order
        tok.add_tokens([AddedToken(t["content"], special=t["special"], normalized=False)])
    return tok


def tokenizer_files(tok) -> dict[str, str]:
    """File name -> text for the tokenizer, laid out as MiniMax's repo has it."""
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": UNK,
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 196608,
    }
    return {
        "tokenizer.json": tok.to_str(),
        "tokenizer_config.json": json.dumps(config, indent=2),
        "chat_template.jinja": _data_text("minimax-m2-chat-template.jinja"),
    }


def script_chain(tok) -> list[int]:
    """The token ids greedy decoding walks: the prompt's last token (the
    newline after `<think>`), the script, eos. Each id appears once, so a
    bigram table can encode the whole walk."""
    chain = tok.encode("\n" + THINK_SCRIPT + THINK_END + ANSWER_SCRIPT).ids
    chain.append(tok.token_to_id(EOS))
    if len(set(chain)) != len(chain):
        raise AssertionError("demo script repeats a token; reword THINK/ANSWER_SCRIPT")
    return chain
