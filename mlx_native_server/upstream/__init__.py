"""Managing the mlx-lm install: source checkout, patch queue, wheel build and
the venv it goes into.
"""
