"""The one door to mlx-lm: the only package that imports `mlx_lm`.

`server` and `run` hold everything about mlx-lm's server engine (its
ModelProvider, ResponseGenerator, request queue and GenerationContext), `kv`
the KV-cache classes and helpers, `models` loading, converting and sampling
a model, and `contract` the table (of the row kinds in `checks`) of every
upstream name and signature these rely on, which
`python -m mlx_native_server.adapter.contract` and `./setup-mlx-lm-repo.sh`
check against an mlx-lm before it is used. No upstream object leaves the
door: the engine gets a `Run` of plain `Step`s.
This file imports nothing, so importing `contract` stays cheap.
"""
