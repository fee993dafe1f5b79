"""The generation engine: mlx-lm's engine behind one adapter, one request's
generation as plain events, the watchdog. `engine.types` imports no mlx.
"""
