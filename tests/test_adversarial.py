"""The HTTP boundary against a hostile neighbour: one regression test per
fault a fuzz of the server found. Every error is JSON in its API's shape
(OpenAI `{"error": {...}}`, Anthropic `{"type": "error", ...}` on paths that
start /v1/messages, including errors the HTTP stack makes itself), and no
bad request leaves the engine poisoned: `assert_healthy` runs after each.

benchmarks/fuzz_server.py is the same hunt at scale.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import time

import pytest
import requests

from conftest import SERVER_ARGS, ServerProcess
from rawhttp import Connection, PeerClosed, build

CHAT, MSGS, COUNT, RESP = (
    "/v1/chat/completions",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/responses",
)
HELLO = [{"role": "user", "content": "hello"}]
BASE = {
    CHAT: {"model": "mlx-local", "messages": HELLO, "max_tokens": 4},
    MSGS: {"model": "mlx-local", "messages": HELLO, "max_tokens": 4},
    COUNT: {"model": "mlx-local", "messages": HELLO},
    RESP: {"model": "mlx-local", "input": "hello", "max_output_tokens": 4},
}
JSON = {"Content-Type": "application/json"}
KEY = "adversarial-key"
KEYED = {"x-api-key": KEY}
SMUGGLED = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def busy(words: int) -> str:
    """A forced reply that is answer text at once (reasoning an Anthropic
    stream may hide), as long as the test needs."""
    return "Ok.</think>\n\n" + "busy " * words


# --- helpers ---------------------------------------------------------------


def _parts(reply) -> tuple[int, dict]:
    """(status, JSON body) of a requests or rawhttp response."""
    if isinstance(reply, requests.Response):
        status, text = reply.status_code, reply.text
    else:
        status, text = reply.status, reply.body.decode("utf-8", "replace")
    try:
        return status, json.loads(text)
    except ValueError:
        pytest.fail(f"{status} with a body that is not JSON: {text[:300]!r}")


def _names(param, field: str) -> bool:
    """`param` names `field`: 'max_tokens', 'messages[0].content', 'messages.0.content'."""
    return isinstance(param, str) and re.split(r"[.\[]", param, maxsplit=1)[0] == field


def openai_error(reply, status: int, field: str | None = None, may: bool = False) -> dict:
    """Assert an OpenAI-shaped error with `status`; with `field`, its param
    names that field (with `may`, a null param is also fine)."""
    got, body = _parts(reply)
    assert got == status, body
    error = body.get("error")
    assert isinstance(error, dict) and set(error) >= {"message", "type", "param", "code"}, body
    assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str)
    if field is not None and not (may and error["param"] is None):
        assert _names(error["param"], field), body
    return error


def anthropic_error(reply, status: int, kind: str | None = None, field: str | None = None) -> dict:
    """Assert an Anthropic-shaped error; `field`, if given, is in the message."""
    got, body = _parts(reply)
    assert got == status, body
    assert body.get("type") == "error" and isinstance(body.get("error"), dict), body
    error = body["error"]
    assert isinstance(error.get("type"), str) and isinstance(error.get("message"), str), body
    if kind is not None:
        assert error["type"] == kind, body
    if field is not None:
        assert field in error["message"], body
    return error


def api_error(path: str, reply, status: int, **kw) -> dict:
    shape = anthropic_error if path.startswith("/v1/messages") else openai_error
    return shape(reply, status, **kw)


def chat(srv, body: dict, headers: dict | None = None, path: str = CHAT, **kw) -> requests.Response:
    return requests.post(srv.root_url + path, json=body, headers=headers, timeout=60, **kw)


def assert_healthy(srv, headers: dict | None = None) -> None:
    """/health is ok and a normal request still generates: the engine is not poisoned."""
    r = requests.get(srv.root_url + "/health", headers=headers, timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "ok", r.text
    r = chat(srv, {"messages": HELLO, "max_tokens": 2}, headers)
    assert r.status_code == 200 and r.json()["choices"][0]["message"], r.text


@contextlib.contextmanager
def healthy_after(srv, headers: dict | None = None):
    """assert_healthy after the block, also when the block failed: the case
    that poisons the engine is then the one that says so."""
    try:
        yield
    finally:
        assert_healthy(srv, headers)


def served(srv, headers: dict | None = None) -> int:
    return requests.get(srv.root_url + "/status", headers=headers, timeout=10).json()[
        "requests_served"
    ]


def host(srv) -> str:
    return f"127.0.0.1:{srv.port}"


def with_field(path: str, name: str, literal: str) -> bytes:
    """The path's normal body with `name` set to a raw JSON `literal`
    (which may be no valid JSON at all, such as NaN)."""
    body = {k: v for k, v in BASE[path].items() if k != name}
    return (json.dumps(body)[:-1] + f', "{name}": {literal}}}').encode()


@pytest.fixture(scope="module")
def server(demo_model, tmp_path_factory):
    """This module's own server with the shared server's settings (it
    overrides conftest's `server`): a case that poisons the engine fails
    here, not in every test module that runs after this one."""
    srv = ServerProcess(
        tmp_path_factory.mktemp("hostile"), ["--model", str(demo_model), *SERVER_ARGS]
    )
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def guarded(demo_model, tmp_path_factory):
    """A server with an API key, an extra allowed host and origin (from the
    environment; the flag is checked by --print-config below), one request
    served at a time and one waiting at most, a 2 s request deadline and
    0.3 s stream keep-alives."""
    env = {
        "MLX_NATIVE_SERVER_API_KEY": KEY,
        "MLX_NATIVE_SERVER_ALLOWED_HOSTS": "proxy.internal",
        "MLX_NATIVE_SERVER_ALLOWED_ORIGINS": "https://app.example",
    }
    srv = ServerProcess(
        tmp_path_factory.mktemp("guarded"),
        [
            "--model",
            str(demo_model),
            "--concurrency",
            "1",
            "--max-pending",
            "1",
            "--request-timeout",
            "2",
            "--max-tokens",
            "16384",
            "--keepalive-interval",
            "0.3",
        ],
        env,
    )
    srv.start()
    yield srv
    srv.stop()


# --- 1. bad bodies -----------------------------------------------------------

DEEP = "[" * 10_000 + "]" * 10_000
BAD_BODIES = [  # id, path, body, field the error must name, or may name (JSON-level faults)
    ("malformed_json", CHAT, b'{"messages": [', None, False),
    ("malformed_json_messages", MSGS, b'{"messages": [', None, False),
    ("malformed_json_count_tokens", COUNT, b'{"model": "mlx-local",', None, False),
    ("malformed_json_responses", RESP, b'{"input": "hi"', None, False),
    ("nesting_10000_arrays", CHAT, with_field(CHAT, "messages", DEEP), "messages", True),
    ("nesting_10000_objects", MSGS, ('{"a":' * 10_000 + "1" + "}" * 10_000).encode(), None, False),
    ("integer_5000_digits", CHAT, with_field(CHAT, "max_tokens", "9" * 5000), "max_tokens", True),
    ("nan_literal", CHAT, with_field(CHAT, "temperature", "NaN"), "temperature", True),
    ("infinity_literal", CHAT, with_field(CHAT, "temperature", "Infinity"), "temperature", True),
    (
        "negative_infinity_literal",
        RESP,
        with_field(RESP, "temperature", "-Infinity"),
        "temperature",
        True,
    ),
    ("max_tokens_infinity", CHAT, with_field(CHAT, "max_tokens", "Infinity"), "max_tokens", True),
    ("max_tokens_nan", CHAT, with_field(CHAT, "max_tokens", "NaN"), "max_tokens", True),
    ("max_tokens_1e309", CHAT, with_field(CHAT, "max_tokens", "1e309"), "max_tokens", True),
    ("max_tokens_0", CHAT, with_field(CHAT, "max_tokens", "0"), "max_tokens", False),
    ("max_tokens_negative", CHAT, with_field(CHAT, "max_tokens", "-1"), "max_tokens", False),
    ("max_tokens_string", CHAT, with_field(CHAT, "max_tokens", '"5"'), "max_tokens", False),
    ("anthropic_max_tokens_0", MSGS, with_field(MSGS, "max_tokens", "0"), "max_tokens", False),
    (
        "anthropic_max_tokens_infinity",
        MSGS,
        with_field(MSGS, "max_tokens", "Infinity"),
        None,
        False,
    ),
    (
        "responses_max_output_tokens_negative",
        RESP,
        with_field(RESP, "max_output_tokens", "-1"),
        "max_output_tokens",
        False,
    ),
    ("model_array", CHAT, with_field(CHAT, "model", "[]"), "model", False),
    ("anthropic_model_array", MSGS, with_field(MSGS, "model", "[]"), "model", False),
    ("seed_2_pow_64", CHAT, with_field(CHAT, "seed", str(2**64)), "seed", False),
    ("min_p_nan", CHAT, with_field(CHAT, "min_p", "NaN"), "min_p", True),
    ("top_p_0", CHAT, with_field(CHAT, "top_p", "0"), "top_p", False),
    ("top_k_above_int32", CHAT, with_field(CHAT, "top_k", str(2**31)), "top_k", False),
    (
        "lone_surrogate_in_content",
        CHAT,
        with_field(CHAT, "messages", json.dumps([{"role": "user", "content": "\ud800"}])),
        "messages",
        False,
    ),
    (
        "lone_surrogate_in_model",
        CHAT,
        with_field(CHAT, "model", json.dumps("\ud800")),
        "model",
        False,
    ),
    (
        "lone_surrogate_in_model_no_messages",
        CHAT,
        b'{"model": "\\ud800", "messages": []}',
        None,
        False,
    ),
    (
        "anthropic_lone_surrogate_in_content",
        MSGS,
        with_field(MSGS, "messages", json.dumps([{"role": "user", "content": "\udfff"}])),
        "messages",
        False,
    ),
    (
        "responses_lone_surrogate_in_input",
        RESP,
        with_field(RESP, "input", json.dumps("\ud800")),
        "input",
        False,
    ),
    # The chat template raises on these; found by benchmarks/fuzz_server.py.
    (
        "tool_result_without_a_tool_call",
        CHAT,
        with_field(
            CHAT,
            "messages",
            json.dumps(
                [*HELLO, {"role": "tool", "tool_call_id": "call_1", "content": "file text"}]
            ),
        ),
        "messages",
        True,
    ),
    (
        "responses_output_without_a_call",
        RESP,
        with_field(
            RESP,
            "input",
            json.dumps([{"type": "function_call_output", "call_id": "call_1", "output": "x"}]),
        ),
        "input",
        True,
    ),
]


@pytest.mark.parametrize(
    "path, data, field, may", [c[1:] for c in BAD_BODIES], ids=[c[0] for c in BAD_BODIES]
)
def test_bad_body_is_a_400_naming_the_field_and_does_not_poison_the_engine(
    server, path, data, field, may
):
    with healthy_after(server):
        r = requests.post(server.root_url + path, data=data, headers=JSON, timeout=60)
        if path.startswith("/v1/messages"):
            anthropic_error(r, 400, field=None if may else field)
        else:
            openai_error(r, 400, field, may)


@pytest.mark.parametrize("top_k", [1024, 2**31 - 1], ids=["1024", "int32_max"])
def test_top_k_1024_does_not_poison_the_engine(server, top_k):
    # At or above the vocabulary, top_k means "no top-k".
    with healthy_after(server):
        r = chat(server, {"messages": HELLO, "max_tokens": 3, "top_k": top_k})
        assert r.status_code == 200, r.text


def test_seed_minus_1_means_random_and_is_accepted(server):
    with healthy_after(server):
        r = chat(server, {"messages": HELLO, "max_tokens": 3, "seed": -1})
        assert r.status_code == 200, r.text


# --- 2. HTTP -------------------------------------------------------------------


def test_head_health_is_200_without_a_body(server):
    with Connection(server.port) as conn:
        reply = conn.request("HEAD", "/health", host=host(server))
        assert reply.status == 200
        assert conn.wait(0.3) != "data", f"bytes after a HEAD response: {conn.buffer[:200]!r}"
    assert_healthy(server)


@pytest.mark.parametrize("method", ["PATCH", "TRACE", "PUT", "DELETE"])
@pytest.mark.parametrize("path", [CHAT, MSGS])
def test_wrong_method_is_a_405_json_error_with_allow(server, method, path):
    r = requests.request(method, server.root_url + path, timeout=10)
    api_error(path, r, 405)
    assert "POST" in (r.headers.get("Allow") or ""), r.headers


@pytest.mark.parametrize(
    "method, path", [("GET", "/nope"), ("POST", "/v1/nope"), ("POST", "/v1/messages/nope")]
)
def test_unknown_path_is_a_404_json_error(server, method, path):
    r = requests.request(method, server.root_url + path, json={}, timeout=10)
    api_error(path, r, 404)


def probe_desync(
    srv,
    method: str,
    path: str,
    status: int,
    headers: dict | None = None,
    follow: dict | None = None,
) -> None:
    """A request whose body is itself a request: exactly one answer; then the
    connection is closed, or the next real request gets its own answer."""
    with Connection(srv.port) as conn:
        conn.send(build(method, path, {**JSON, **(headers or {})}, SMUGGLED, host=host(srv)))
        api_error(path, conn.read_response(), status)
        state = conn.wait(0.5)
        assert state != "data", f"a second response to one request: {conn.buffer[:300]!r}"
        if state == "closed":
            return
        try:
            reply = conn.request("GET", "/v1/models", follow, host=host(srv))
        except PeerClosed:
            return  # closed before it read the next request: also safe
        assert reply.status == 200 and reply.json().get("object") == "list", reply.body[:300]


def test_keepalive_desync_post_to_unknown_path_answers_once(server):
    probe_desync(server, "POST", "/nope", 404)
    assert_healthy(server)


def test_keepalive_desync_after_405_answers_once(server):
    probe_desync(server, "PUT", CHAT, 405)
    assert_healthy(server)


def test_keepalive_desync_after_401_answers_once(guarded):
    probe_desync(guarded, "POST", CHAT, 401, follow=KEYED)
    assert_healthy(guarded, KEYED)


def test_content_length_with_transfer_encoding_is_400_and_closes(server):
    head = {**JSON, "Content-Length": "5", "Transfer-Encoding": "chunked"}
    with Connection(server.port) as conn:
        conn.send(build("POST", CHAT, head, b"0\r\n\r\n" + SMUGGLED, host=host(server)))
        assert conn.read_response().status == 400
        assert conn.closed_by(time.monotonic() + 3), "the connection stayed open"
        assert conn.buffer == b"", f"more after the 400: {conn.buffer[:300]!r}"
    assert_healthy(server)


@pytest.mark.parametrize("method, path", [("GET", "/v1/models"), ("POST", MSGS)])
def test_oversized_headers_are_a_431_json_error(server, method, path):
    body = json.dumps(BASE[MSGS]).encode() if method == "POST" else b""
    data = build(method, path, {**JSON, "X-Fill": "a" * 65536}, body, host=host(server))
    with Connection(server.port) as conn:
        conn.send(data)
        reply = conn.read_response()
    assert reply.status in (431, 400), reply.status
    api_error(path, reply, reply.status)
    assert_healthy(server)


def test_an_8kib_url_is_refused_with_json(server):
    with Connection(server.port) as conn:
        reply = conn.request("GET", "/v1/models?q=" + "a" * 9000, host=host(server))
    assert reply.status in (414, 431, 400), reply.status
    openai_error(reply, reply.status)
    assert_healthy(server)


@pytest.mark.parametrize("path", [CHAT, MSGS])
def test_oversized_body_is_a_413_in_the_apis_shape(server, path):
    with Connection(server.port) as conn:
        reply = conn.request(
            "POST", path, {**JSON, "Content-Length": "999999999999"}, host=host(server)
        )
    api_error(path, reply, 413)
    assert_healthy(server)


@pytest.mark.parametrize("path", [CHAT, MSGS])
def test_post_without_a_length_is_a_411_in_the_apis_shape(server, path):
    with Connection(server.port) as conn:
        reply = conn.request("POST", path, JSON, host=host(server))
    api_error(path, reply, 411)
    assert_healthy(server)


@pytest.mark.parametrize("path", [CHAT, MSGS])
def test_missing_api_key_is_a_401_in_the_apis_shape(guarded, path):
    api_error(path, chat(guarded, BASE[path], path=path), 401)


# --- 3. content type -----------------------------------------------------------


def test_text_plain_post_starts_no_generation(server):
    before = served(server)
    for path in (CHAT, MSGS, COUNT, RESP):  # a browser's cross-site "simple" request
        data = json.dumps(BASE[path]).encode()
        api_error(
            path,
            requests.post(
                server.root_url + path,
                data=data,
                timeout=30,
                headers={"Content-Type": "text/plain"},
            ),
            415,
        )
        api_error(path, requests.post(server.root_url + path, data=data, timeout=30), 415)
    assert served(server) == before
    assert_healthy(server)


def test_json_with_charset_is_accepted(server):
    r = requests.post(
        server.root_url + CHAT,
        data=json.dumps(BASE[CHAT]).encode(),
        timeout=60,
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert r.status_code == 200, r.text


# --- 4. Host and Origin (DNS rebinding, cross-site pages) ----------------------


@pytest.mark.parametrize(
    "method, path", [("GET", "/v1/models"), ("POST", CHAT), ("GET", "/status"), ("POST", MSGS)]
)
def test_dns_rebinding_host_is_refused(guarded, method, path):
    before = served(guarded, KEYED)
    r = requests.request(
        method,
        guarded.root_url + path,
        json=BASE.get(path),
        timeout=30,
        headers={**KEYED, "Host": "evil.example"},
    )
    api_error(path, r, 403)
    assert served(guarded, KEYED) == before


@pytest.mark.parametrize(
    "name", ["localhost:{port}", "127.0.0.1:{port}", "[::1]:{port}", "proxy.internal"]
)
def test_loopback_and_allowed_hosts_are_served(guarded, name):
    headers = {**KEYED, "Host": name.format(port=guarded.port)}
    assert (
        requests.get(guarded.root_url + "/v1/models", headers=headers, timeout=10).status_code
        == 200
    )
    assert chat(guarded, BASE[CHAT], headers).status_code == 200


def test_allowed_hosts_has_a_flag(script, tmp_path):
    r = script(
        "start-server.sh", "--print-config", "--allowed-hosts", "proxy.internal", home=tmp_path
    )
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("allowed_hosts"))
    assert "'proxy.internal'" in line and line.endswith("# set by --allowed-hosts")


@pytest.mark.parametrize(
    "method, path",
    [("GET", "/v1/models"), ("POST", CHAT), ("POST", MSGS), ("GET", "/health"), ("GET", "/status")],
)
def test_cross_site_origin_is_refused(guarded, method, path):
    r = requests.request(
        method,
        guarded.root_url + path,
        json=BASE.get(path),
        timeout=30,
        headers={**KEYED, "Origin": "https://evil.example"},
    )
    api_error(path, r, 403)


@pytest.mark.parametrize("origin", ["https://app.example", "http://localhost:3000"])
def test_allowed_and_loopback_origins_are_served(guarded, origin):
    r = chat(guarded, BASE[CHAT], {**KEYED, "Origin": origin})
    assert r.status_code == 200, r.text
    if origin == "https://app.example":
        assert r.headers.get("Access-Control-Allow-Origin") == origin


@pytest.mark.parametrize(
    "origin, status", [("https://evil.example", 403), ("https://app.example", 204)]
)
def test_cors_preflight(guarded, origin, status):
    # A browser sends no credentials on a preflight: no API key here.
    r = requests.options(
        guarded.root_url + CHAT,
        timeout=10,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-api-key",
        },
    )
    assert r.status_code == status, r.text
    if status == 204:
        assert r.headers.get("Access-Control-Allow-Origin") == origin
    else:
        openai_error(r, 403)


# --- 5. admission --------------------------------------------------------------


def _open_stream(srv, path: str, body: dict) -> tuple[Connection, object]:
    """Start a streamed request and read until it is generating (a few
    delta events: every API names them so)."""
    conn = Connection(srv.port, timeout=60)
    conn.send(
        build(
            "POST",
            path,
            {**JSON, **KEYED},
            json.dumps({**body, "stream": True}).encode(),
            host=host(srv),
        )
    )
    reply = conn.read_head()
    assert reply.status == 200, conn.read_body(reply).body[:300]
    while reply.body.count(b"delta") < 5:
        assert conn.read_chunk(reply) is not None, reply.body[-300:]
    return conn, reply


def test_max_pending_refuses_with_retry_after(guarded):
    # Long enough to outlast the test on fast hardware too; it is cancelled below.
    long = {"messages": HELLO, "max_tokens": 15000, "x_mns_script": busy(7000)}
    running, _ = _open_stream(guarded, CHAT, long)
    with running, Connection(guarded.port, timeout=120) as pending:
        pending.send(
            build(
                "POST", CHAT, {**JSON, **KEYED}, json.dumps(BASE[CHAT]).encode(), host=host(guarded)
            )
        )
        time.sleep(1.0)  # the second request is now the one waiting
        refused = chat(guarded, BASE[CHAT], KEYED)
        assert openai_error(refused, 429)["type"] == "rate_limit_error"
        assert refused.headers.get("Retry-After", "").isdigit()
        overloaded = chat(guarded, BASE[MSGS], KEYED, path=MSGS)
        anthropic_error(overloaded, 529, "overloaded_error")
        assert overloaded.headers.get("Retry-After", "").isdigit()
        running.close()  # frees the engine for the waiting one
        second = pending.read_response()
    assert second.status == 200 and second.json()["choices"], second.body[:300]
    assert_healthy(guarded, KEYED)


@pytest.mark.parametrize("path", [CHAT, MSGS])
def test_streamed_prompt_over_the_context_is_a_400_even_when_slow_to_read(guarded, path):
    # Found by benchmarks/fuzz_server.py: a prompt that takes longer than a
    # keep-alive interval to tokenize had its stream opened first, so the
    # overflow came as an error event after a 200; clients compact only on the 400.
    body = {
        **BASE[path],
        "stream": True,
        "messages": [{"role": "user", "content": "\U0001f642" * 200_000}],
    }
    error = api_error(path, chat(guarded, body, KEYED, path=path), 400)
    assert (
        error.get("code") == "context_length_exceeded" or "prompt is too long" in error["message"]
    ), error


# --- 6. deadlines (request_timeout 2) -------------------------------------------


def test_header_drip_is_cut_at_request_timeout(guarded):
    data = build("GET", "/v1/models", KEYED, host=host(guarded))
    started = time.monotonic()
    with Connection(guarded.port) as conn:
        for byte in data:  # one header byte a second
            if conn.closed_by(time.monotonic() + 1.0) or not conn.send(bytes([byte])):
                break
            if time.monotonic() - started > 8:
                break
        assert conn.eof and time.monotonic() - started <= 5.0, "still open after 5 s"


@pytest.mark.parametrize("path", [CHAT, MSGS])
def test_body_that_stops_short_is_408_or_closed(guarded, path):
    with Connection(guarded.port) as conn:
        conn.send(
            build(
                "POST",
                path,
                {**JSON, **KEYED, "Content-Length": "100"},
                b'{"model": ',
                host=host(guarded),
            )
        )
        assert conn.closed_by(time.monotonic() + 5.0), "still open after 5 s"
        if conn.buffer:  # what it said before closing
            api_error(path, conn.read_response(), 408)


def test_150_slow_sockets_do_not_stop_a_normal_request(guarded):
    slow = []
    try:
        for _ in range(150):
            conn = Connection(guarded.port, timeout=10)
            conn.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
            slow.append(conn)
        started = time.monotonic()
        r = chat(guarded, BASE[CHAT], KEYED)
        assert r.status_code == 200, r.text
        assert time.monotonic() - started < 30
    finally:
        for conn in slow:
            conn.close()
    assert_healthy(guarded, KEYED)


# --- 7. a contained engine -------------------------------------------------------


@pytest.mark.parametrize("path", [CHAT, MSGS, RESP])
def test_engine_failure_is_a_500_in_the_apis_shape(server, path):
    with healthy_after(server):
        api_error(
            path, chat(server, {**BASE[path], "x_mns_script": "partial<<fail>>"}, path=path), 500
        )


def terminal_event(path: str, events: list[tuple[str | None, str]]) -> None:
    """Assert the stream ended with its API's terminal error event."""
    assert events, "an empty stream"
    if path == CHAT:
        assert events[-1][1] == "[DONE]", events[-3:]
        assert "message" in json.loads(events[-2][1])["error"], events[-3:]
    elif path == MSGS:
        name, data = events[-1]
        assert name == "error", events[-3:]
        assert json.loads(data)["type"] == "error", data
    else:
        name, data = events[-1]
        assert name == "response.failed" and json.loads(data)["type"] == "response.failed", events[
            -3:
        ]
        assert json.loads(data)["response"]["status"] == "failed", data


@pytest.mark.parametrize("path", [CHAT, MSGS, RESP])
def test_engine_failure_mid_stream_ends_with_the_terminal_error_event(server, path):
    with healthy_after(server), Connection(server.port, timeout=60) as conn:
        body = {**BASE[path], "stream": True, "x_mns_script": "partial<<fail>>"}
        reply = conn.request("POST", path, JSON, json.dumps(body).encode(), host=host(server))
        assert reply.status == 200 and reply.complete, reply.body[-300:]
        terminal_event(path, reply.events())


def test_a_dead_generation_thread_makes_health_503_and_exits_non_zero(start_server):
    with start_server(args=["--watchdog-interval", "0.5"]) as srv:
        r = requests.post(
            srv.root_url + "/_test/break-engine", json={"hang_seconds": 0}, timeout=10
        )
        assert r.status_code == 200
        broken, seen = time.monotonic(), []
        while srv.proc.poll() is None and time.monotonic() - broken < 10:
            try:
                seen.append(requests.get(srv.root_url + "/health", timeout=2).status_code)
            except requests.RequestException:
                time.sleep(0.01)  # it is stopping
        code = srv.wait(10)
    assert code not in (0, None) and time.monotonic() - broken < 5, (code, seen)
    assert 503 in seen and set(seen[seen.index(503) :]) == {503}, seen


# --- 8. shutdown -----------------------------------------------------------------


def test_sigterm_mid_stream_sends_terminal_event_and_exits_0(start_server):
    # Full-precision KV: the engine runs all three streams at once.
    args = ["--shutdown-timeout", "2", "--kv-bits", "0", "--max-tokens", "30000"]
    with start_server(args=args) as srv:
        streams = {}
        for path in (CHAT, MSGS, RESP):
            limit = "max_output_tokens" if path == RESP else "max_tokens"
            body = {**BASE[path], limit: 25000, "x_mns_script": busy(10000)}
            streams[path] = _open_stream(srv, path, body)
        srv.signal(signal.SIGTERM)
        signalled = time.monotonic()
        for path, (conn, reply) in streams.items():
            conn.deadline = signalled + 2 + 2  # shutdown_timeout + 2 s
            with conn:
                try:
                    conn.read_body(reply)
                except TimeoutError:
                    pytest.fail(
                        f"{path}: the stream went on 4 s after SIGTERM: {reply.body[-200:]!r}"
                    )
            assert reply.complete, f"{path}: no clean chunked end"
            terminal_event(path, reply.events())
        assert srv.wait(10) == 0
        assert time.monotonic() - signalled <= 2 + 2


# --- 9. the schema and the read-only endpoints ------------------------------------


def test_openapi_schema_lists_the_post_endpoints(server):
    r = requests.get(server.root_url + "/openapi.json", timeout=10)
    assert r.status_code == 200
    assert {CHAT, MSGS, COUNT, RESP} <= set(r.json()["paths"])


@pytest.mark.parametrize(
    "path",
    ["/health", "/status", "/metrics", "/openapi.json", "/v1/models", "/v1/models/mlx-local"],
)
def test_every_read_only_endpoint_answers(server, path):
    assert requests.get(server.root_url + path, timeout=10).status_code == 200
