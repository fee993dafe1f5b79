"""The login service: launchd on macOS, systemd on Linux, rendered from one
spec, and its recorded state.
"""
