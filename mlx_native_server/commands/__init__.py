"""One module per verb of `python -m mlx_native_server`; each has `main(argv) -> int`."""
