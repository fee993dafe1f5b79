"""Imports every front end so its routes register with the HTTP layer."""

from . import openai_chat  # noqa: F401
from . import status_api  # noqa: F401
from . import anthropic_api  # noqa: F401
from . import responses_api  # noqa: F401
