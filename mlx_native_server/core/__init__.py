"""The core every layer stands on: settings, paths, errors, subprocesses, logs,
ports and the checks start runs first. Standard library only.
"""
