"""Object storage: one protocol (base.py), providers registered by scheme (registry.py)."""
