"""The session-aware prompt cache: the in-memory store, its eviction policy,
the disk tier and the model fingerprint.
"""
