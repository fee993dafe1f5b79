"""Anthropic Messages API: `POST /v1/messages` and `/v1/messages/count_tokens`.

Streams as Anthropic does: `message_start`, `ping`, content blocks
(thinking with a closing `signature_delta`, text, tool_use), `message_delta`
with the stop reason and usage, `message_stop`.

`message_start` carries real usage (`input_tokens` without the cached part,
`cache_read_input_tokens`; Claude Code compacts by them), and the cached
count is only known once the engine has looked the prompt up. So it goes
out at the engine's first prefill-progress report (right after that look-
up, before the prefill runs), or at the first delta if that comes first.
Until then the stream's heartbeat is an SSE comment, which every SSE parser
skips; from then on it is a `ping` event, which the SDKs skip, so a long
prefill or a long tool call never leaves the connection silent.
"""

from __future__ import annotations

from .anthropic_blocks import Blocks, message, new_message_id, stop_reason, usage
from .anthropic_translate import MessagesOptions, parse_messages
from .api_errors import ApiError, expect
from .engine import ChatRequest, EngineUnavailable
from .generation import Generation
from .http_server import App, Handler, route
from .openai_chat import session_id
from .sse import ClientGone, ConnectionGuard, EventStream, open_stream, while_queued


def _parse(h: Handler, body: dict, count_only: bool = False) -> tuple[ChatRequest, MessagesOptions]:
    app: App = h.app
    app.check_model(body.get("model"), "anthropic")
    request, opts = parse_messages(body, app.settings.served_model_id, count_only=count_only)
    request.session_id = session_id(h.headers)
    if app.test_hooks:
        request.script = expect(body, "x_mns_script", str)
    return request, opts


def _cached(gen: Generation) -> int:
    return max(gen.ctx.prompt_cache_count, gen.usage.cached_tokens, 0)


def _final_usage(gen: Generation) -> dict:
    u = gen.usage
    return usage(u.prompt_tokens, u.cached_tokens, u.completion_tokens)


class _Stream:
    """One streamed reply: sends message_start once, then blocks and pings."""

    def __init__(self, h: Handler, opts: MessagesOptions):
        self.h, self.opts = h, opts
        self.id = new_message_id()
        self.gen: Generation | None = None
        self.stream: EventStream | None = None
        self.started = False

    def heartbeat(self, stream: EventStream) -> None:
        if self.started:
            stream.send({"type": "ping"}, event="ping")
        else:
            stream.comment("waiting for the engine")

    def on_progress(self, _done: int, _total: int) -> None:
        if self.gen is not None and self.gen.ctx.prompt_cache_count >= 0:
            self.start_message()

    def start_message(self) -> None:
        if self.started or self.stream is None:
            return
        gen = self.gen
        start = message(self.opts.model, self.id, [], usage(gen.usage.prompt_tokens, _cached(gen), 0))
        self.stream.send({"type": "message_start", "message": start}, event="message_start")
        self.stream.send({"type": "ping"}, event="ping")
        self.started = True

    def run(self, gen: Generation) -> None:
        self.gen = gen
        self.stream = stream = open_stream(self.h, self.heartbeat)
        blocks = Blocks(self.opts.show_thinking)
        with ConnectionGuard(self.h.connection, gen.cancel, stream, self.h.app.settings.keepalive_interval):
            for d in gen:
                self.start_message()
                for event, data in blocks.feed(d):
                    stream.send(data, event=event)
            self.start_message()
            for event, data in blocks.close_block():
                stream.send(data, event=event)
            stream.send({"type": "message_delta",
                         "delta": {"stop_reason": stop_reason(gen.finish_reason, gen.stop_sequence),
                                   "stop_sequence": gen.stop_sequence},
                         "usage": _final_usage(gen)}, event="message_delta")
            stream.send({"type": "message_stop"}, event="message_stop")
        stream.close()


def _complete(h: Handler, gen: Generation, opts: MessagesOptions) -> None:
    blocks = Blocks(opts.show_thinking)
    with ConnectionGuard(h.connection, gen.cancel, None, h.app.settings.keepalive_interval) as guard:
        for d in gen:
            blocks.feed(d)
        blocks.close_block()
    if guard.gone:
        h.close_connection = True
        return
    h.send_json(200, message(opts.model, new_message_id(), blocks.content, _final_usage(gen),
                             stop_reason(gen.finish_reason, gen.stop_sequence), gen.stop_sequence))


@route("POST", "/v1/messages", flavor="anthropic")
def messages(h: Handler, body: dict) -> None:
    request, opts = _parse(h, body)
    streamer = _Stream(h, opts) if opts.stream else None
    gen = h.app.start(request, "anthropic", progress=streamer.on_progress if streamer else None,
                      waiting=while_queued(h, opts.stream, streamer.heartbeat if streamer else None))
    try:
        if streamer:
            streamer.run(gen)
        else:
            _complete(h, gen, opts)
    except ClientGone:
        gen.cancel()
        h.close_connection = True
    finally:
        h.app.finish(gen)


@route("POST", "/v1/messages/count_tokens", flavor="anthropic")
def count_tokens(h: Handler, body: dict) -> None:
    request, _ = _parse(h, body, count_only=True)
    try:
        n = h.app.engine.count_tokens(request)
    except EngineUnavailable as e:
        raise ApiError(503, f"The generation engine is unavailable: {e}.", "service_unavailable") from None
    except Exception as e:  # the template refused the conversation
        raise ApiError(400, f"Could not render the conversation: {e}") from None
    h.send_json(200, {"input_tokens": n})
