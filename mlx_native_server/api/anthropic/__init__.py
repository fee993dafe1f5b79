"""Anthropic's messages API: translation to a chat request, content blocks and
their stream events.
"""
