"""The HTTP boundary: uvicorn server, request checks, the ASGI app, the route
table, admission and metrics.
"""
