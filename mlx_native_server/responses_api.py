"""OpenAI Responses API: `POST /v1/responses` (Codex CLI, `responses.create`).

Stateless (see responses_translate). Streams `response.created`, output
items with their text, reasoning and function-call argument events, and
`response.completed` with usage; a silent stretch (long prefill, long tool
call) gets SSE comment heartbeats.
"""

from __future__ import annotations

from .api_errors import expect
from .engine import ChatRequest
from .generation import Generation
from .http_server import Handler, route
from .openai_chat import session_id
from .responses_events import Output
from .responses_translate import ResponsesOptions, parse_responses
from .sse import ClientGone, ConnectionGuard, EventStream, open_stream, while_queued


def _send(stream: EventStream, events: list[dict], counter: list[int]) -> None:
    for event in events:
        event["sequence_number"] = counter[0]
        counter[0] += 1
        stream.send(event, event=event["type"])


def _stream(h: Handler, gen: Generation, out: Output) -> None:
    stream = open_stream(h)
    seq = [0]
    with ConnectionGuard(h.connection, gen.cancel, stream, h.app.settings.keepalive_interval):
        _send(stream, out.start(), seq)
        for d in gen:
            _send(stream, out.feed(d), seq)
        _send(stream, out.finish(gen.finish_reason, gen.usage), seq)
    stream.close()


def _complete(h: Handler, gen: Generation, out: Output) -> None:
    with ConnectionGuard(h.connection, gen.cancel, None, h.app.settings.keepalive_interval) as guard:
        for d in gen:
            out.feed(d)
    if guard.gone:
        h.close_connection = True
        return
    final = out.finish(gen.finish_reason, gen.usage)[-1]
    h.send_json(200, final["response"])


def _parse(h: Handler, body: dict) -> tuple[ChatRequest, ResponsesOptions]:
    app = h.app
    app.check_model(body.get("model"))
    request, opts = parse_responses(body, app.settings.served_model_id)
    request.session_id = request.session_id or session_id(h.headers)
    if app.test_hooks:
        request.script = expect(body, "x_mns_script", str)
    return request, opts


@route("POST", "/v1/responses", "/responses")
def responses(h: Handler, body: dict) -> None:
    request, opts = _parse(h, body)
    gen = h.app.start(request, "openai", waiting=while_queued(h, opts.stream))
    out = Output(opts.model, opts.echo)
    try:
        (_stream if opts.stream else _complete)(h, gen, out)
    except ClientGone:
        gen.cancel()
        h.close_connection = True
    finally:
        h.app.finish(gen)
