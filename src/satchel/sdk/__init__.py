"""The Python SDK: HTTP client (client.py); runs, artifacts and transfers come in later issues."""
