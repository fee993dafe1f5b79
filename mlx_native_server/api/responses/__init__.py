"""OpenAI's responses API (Codex): translation to a chat request and its stream events."""
