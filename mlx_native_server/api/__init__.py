"""The three APIs (OpenAI chat, Anthropic messages, OpenAI responses): parsers,
translators and event encoders over one front-end skeleton (`streaming`, whose
event-loop half is `channel`).
"""
