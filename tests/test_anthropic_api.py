"""The Anthropic Messages API with the real `anthropic` SDK against the live
server on the generated model (issue 5)."""

from __future__ import annotations

import json
import re
import threading
import time

import anthropic
import pytest
import requests

MODEL = "claude-sonnet-4-6"  # Claude Code asks for its own model names
SCRIPT = (
    'Let me look.</think>\n\nSure.<minimax:tool_call>\n<invoke name="read">\n'
    '<parameter name="path">a.txt</parameter>\n</invoke>\n</minimax:tool_call>'
)
READ = {
    "name": "read",
    "description": "Read a file.",
    "input_schema": {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"path": {"type": "string"}},
        "required": ["path"],
        "additionalProperties": False,
    },
}
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def client(server):
    return anthropic.Anthropic(base_url=server.root_url, api_key="unused", max_retries=0)


def raw_events(url: str, body: dict, headers: dict | None = None) -> list[tuple[str, dict]]:
    """(event, data) pairs of a streamed reply, pings and comments included."""
    events, event = [], None
    with requests.post(
        url, json={**body, "stream": True}, headers=headers, stream=True, timeout=60
    ) as r:
        assert r.status_code == 200, r.text
        for line in r.iter_lines(decode_unicode=True):
            if line.startswith(":"):
                events.append(("comment", {}))
            elif line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                events.append((event, json.loads(line[6:])))
    return events


def test_create_returns_thinking_and_text(client):
    msg = client.messages.create(model=MODEL, max_tokens=100, messages=HI)
    assert [b.type for b in msg.content] == ["thinking", "text"]
    assert msg.content[0].signature and msg.content[1].text
    assert msg.stop_reason == "end_turn" and msg.model == MODEL
    assert msg.usage.input_tokens + msg.usage.cache_read_input_tokens > 10
    assert msg.usage.output_tokens > 0


def test_create_with_tools(client):
    msg = client.messages.create(
        model=MODEL, max_tokens=100, messages=HI, tools=[READ], extra_body={"x_mns_script": SCRIPT}
    )
    assert [b.type for b in msg.content] == ["thinking", "text", "tool_use"]
    assert msg.content[2].name == "read" and msg.content[2].input == {"path": "a.txt"}
    assert msg.content[2].id.startswith("toolu_")
    assert msg.stop_reason == "tool_use"


def test_stream_without_tools(client):
    with client.messages.stream(model=MODEL, max_tokens=100, messages=HI) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[-1].text == text
    assert final.stop_reason == "end_turn"


def test_stream_with_tools_and_event_order(client, server):
    with client.messages.stream(
        model=MODEL, max_tokens=100, messages=HI, tools=[READ], extra_body={"x_mns_script": SCRIPT}
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].thinking == "Let me look."
    assert final.content[2].input == {"path": "a.txt"} and final.stop_reason == "tool_use"

    events = raw_events(
        server.root_url + "/v1/messages?beta=true",
        {
            "model": MODEL,
            "max_tokens": 100,
            "messages": HI,
            "tools": [READ],
            "x_mns_script": SCRIPT,
        },
    )
    names = [e for e, _ in events if e != "comment"]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    deltas = [d["delta"]["type"] for e, d in events if e == "content_block_delta"]
    assert (
        deltas.index("signature_delta")
        < deltas.index("text_delta")
        < deltas.index("input_json_delta")
    )
    start = events[[e for e, _ in events].index("message_start")][1]["message"]["usage"]
    end = events[[e for e, _ in events].index("message_delta")][1]["usage"]
    assert start["input_tokens"] + start["cache_read_input_tokens"] > 10
    # message_start waited for the cache lookup: its numbers are the final ones
    assert (start["input_tokens"], start["cache_read_input_tokens"]) == (
        end["input_tokens"],
        end["cache_read_input_tokens"],
    )


def test_count_tokens_matches_the_prompt(client):
    kwargs = dict(model=MODEL, messages=HI, system="Be brief.", tools=[READ])
    counted = client.messages.count_tokens(**kwargs).input_tokens
    msg = client.messages.create(max_tokens=20, **kwargs)
    assert counted == msg.usage.input_tokens + msg.usage.cache_read_input_tokens


def test_tool_result_round_trip_with_thinking_echoed_back(client):
    first = client.messages.create(
        model=MODEL,
        max_tokens=100,
        tools=[READ],
        extra_body={"x_mns_script": SCRIPT},
        messages=[{"role": "user", "content": "read a.txt"}],
    )
    call = first.content[-1]
    history = [
        {"role": "user", "content": "read a.txt"},
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": call.id,
                    "content": [{"type": "text", "text": "hello"}],
                }
            ],
        },
    ]
    second = client.messages.create(
        model=MODEL,
        max_tokens=100,
        tools=[READ],
        messages=history,
        extra_body={"x_mns_script": "Got it.</think>\n\nIt says hello."},
    )
    assert [b.type for b in second.content] == ["thinking", "text"]
    assert second.content[1].text == "It says hello."
    # the first turn's prompt and answer are still in the prefix cache
    assert second.usage.cache_read_input_tokens > first.usage.input_tokens // 2


def test_billing_line_does_not_defeat_the_prefix_cache(client):
    """Issue 5: Claude Code's per-request billing header must not change the prompt."""
    system = [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.12.a1b; cch=%s;"},
        {"type": "text", "text": "You are a careful coding agent. " * 20},
    ]
    counts, reads = [], []
    for cch in ("11111", "22222"):
        sys_blocks = [dict(system[0], text=system[0]["text"] % cch), system[1]]
        counts.append(
            client.messages.count_tokens(model=MODEL, system=sys_blocks, messages=HI).input_tokens
        )
        msg = client.messages.create(model=MODEL, max_tokens=20, system=sys_blocks, messages=HI)
        reads.append(msg.usage)
    assert counts[0] == counts[1]
    assert reads[1].cache_read_input_tokens >= counts[1] - 1 and reads[1].input_tokens <= 1


def test_context_overflow_in_anthropic_shape(client):
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "word " * 5000}]
        )
    body = e.value.body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("prompt is too long: ")
    assert body["error"]["message"].endswith(" tokens > 4096 maximum")


@pytest.mark.parametrize(
    "body, status, kind, needle",
    [
        ({"model": MODEL, "messages": HI}, 400, "invalid_request_error", "max_tokens"),
        (
            {
                "model": MODEL,
                "max_tokens": 5,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {
                                    "type": "base64",
                                    "media_type": "image/png",
                                    "data": "AA==",
                                },
                            }
                        ],
                    }
                ],
            },
            400,
            "invalid_request_error",
            "text only",
        ),
        ({"model": "gpt-4o", "max_tokens": 5, "messages": HI}, 404, "not_found_error", "gpt-4o"),
    ],
)
def test_bad_input_in_anthropic_shape(server, body, status, kind, needle):
    r = requests.post(
        server.root_url + "/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"}
    )
    assert r.status_code == status
    err = r.json()
    assert (
        err["type"] == "error"
        and err["error"]["type"] == kind
        and needle in err["error"]["message"]
    )


def test_disconnect_stops_the_generation(server):
    body = {
        "model": MODEL,
        "max_tokens": 3000,
        "stream": True,
        "messages": HI,
        "x_mns_script": "thinking " * 2500,
    }
    with requests.post(server.root_url + "/v1/messages", json=body, stream=True, timeout=30) as r:
        next(r.iter_lines())
    deadline = time.monotonic() + 10
    while (
        requests.get(server.root_url + "/status").json()["requests_in_flight"]
        and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    assert requests.get(server.root_url + "/status").json()["requests_in_flight"] == 0
    done = re.findall(r"done: .*completion=(\d+)", server.app_log())
    assert int(done[-1]) < 2000  # stopped early, not after the whole script


def test_key_pings_and_overload(start_server):
    """A server with an API key, one request served at a time and one waiting
    slot, and a 0.2 s heartbeat."""
    with start_server(
        args=[
            "--api-key",
            "sekret",
            "--concurrency",
            "1",
            "--max-pending",
            "1",
            "--keepalive-interval",
            "0.2",
        ]
    ) as srv:
        url = srv.root_url + "/v1/messages"
        for headers in ({"x-api-key": "sekret"}, {"Authorization": "Bearer sekret"}):
            r = requests.post(
                url,
                json={"model": MODEL, "max_tokens": 5, "messages": HI},
                headers={**headers, "anthropic-beta": "no-such-beta-2099"},
            )
            assert r.status_code == 200, r.text
        r = requests.post(
            url,
            json={"model": MODEL, "max_tokens": 5, "messages": HI},
            headers={"x-api-key": "bad"},
        )
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"

        # A long tool call sends no deltas for about a second: pings keep the stream alive.
        long_call = (
            'Ok.</think>\n\nWriting.<minimax:tool_call>\n<invoke name="read">\n<parameter name="path">'
            + "lorem ipsum dolor " * 150
            + "</parameter>\n</invoke>\n</minimax:tool_call>"
        )
        body = {
            "model": MODEL,
            "max_tokens": 3500,
            "messages": HI,
            "tools": [READ],
            "x_mns_script": long_call,
        }
        # max_pending = 1: the first request behind the long one waits, the next is refused.
        overloaded = []
        timers = [
            threading.Timer(
                delay,
                lambda: overloaded.append(
                    requests.post(
                        url,
                        json={"model": MODEL, "max_tokens": 5, "messages": HI},
                        headers={"x-api-key": "sekret"},
                    )
                ),
            )
            for delay in (0.3, 0.6)
        ]
        for timer in timers:
            timer.start()
        events = raw_events(url, body, headers={"x-api-key": "sekret"})
        for timer in timers:
            timer.join()
        kinds = [
            (e, d.get("delta", {}).get("type") or d.get("content_block", {}).get("type"))
            for e, d in events
        ]
        tool_start = kinds.index(("content_block_start", "tool_use"))
        last_text = max(i for i, k in enumerate(kinds[:tool_start]) if k[1] == "text_delta")
        assert [k for k, _ in kinds[last_text:tool_start]].count("ping") >= 2, kinds
        assert overloaded[0].status_code == 529 and overloaded[0].headers["Retry-After"]
        assert overloaded[0].json()["error"]["type"] == "overloaded_error"
        assert overloaded[1].status_code == 200  # the one that waited was served


def test_stop_sequence_and_max_tokens(client):
    msg = client.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=HI,
        stop_sequences=["STOP"],
        extra_body={"x_mns_script": "Hm.</think>\n\nOne two STOP three four"},
    )
    assert msg.stop_reason == "stop_sequence" and msg.stop_sequence == "STOP"
    assert "three" not in msg.content[-1].text
    msg = client.messages.create(model=MODEL, max_tokens=3, messages=HI)
    assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens == 3
