"""Fixtures for the storage tests: one line per real server module (fixtures live there)."""
