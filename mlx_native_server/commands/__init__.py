"""One module per verb of `python -m mlx_native_server`, each with `main(argv) -> int`
(cli.py dispatches to them; `_flags` holds what they share)."""
