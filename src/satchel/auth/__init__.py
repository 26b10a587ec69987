"""Credentials: password hashing, API keys, web sessions and encryption of secrets at rest."""
