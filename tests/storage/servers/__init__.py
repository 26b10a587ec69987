"""Real storage servers for tests, each started by a session fixture on 127.0.0.1 and a free
port, and stopped by its own PID (see ../shared/TESTING.md)."""
