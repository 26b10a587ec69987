"""Logging set-up: request ids on every line, and a filter that scrubs secrets.

Secrets should never reach a log call in the first place (SecretStr, redacted addresses); the
filter is the second line of defence for anything that slips through (an API key in an
exception message, a password in a URL).
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

_PATTERNS = [
    (re.compile(r"sk_[A-Za-z0-9]{8}_[A-Za-z0-9]{8,}"), lambda m: m.group(0)[:11] + "_****"),
    (re.compile(r"(?i)(authorization:?\s*(?:bearer|basic)\s+)\S+"), lambda m: m.group(1) + "****"),
    (re.compile(r"(?i)((?:password|secret|api_key|token|signature|sig|"
                r"X-Amz-Signature|X-Satchel-Signature)[\"']?\s*[=:]\s*[\"']?)[^\s&\"',]+"),
     lambda m: m.group(1) + "****"),
    (re.compile(r"(://[^/\s:@]*:)[^@\s/]+@"), lambda m: m.group(1) + "****@"),
]


def scrub(text: str) -> str:
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


class ScrubbingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        message = record.getMessage()
        cleaned = scrub(message)
        if record.exc_info and record.exc_info[1] is not None:
            # Render the traceback now, scrubbed, so the formatter cannot leak it later.
            formatter = logging.Formatter()
            cleaned += "\n" + scrub(formatter.formatException(record.exc_info))
            record.exc_info = None
            record.exc_text = None
        record.msg = cleaned
        record.args = None
        return True


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
    )
    handler.addFilter(ScrubbingFilter())
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_satchel", False):
            root.removeHandler(h)
    handler._satchel = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # Uvicorn's access log prints full URLs (query strings carry signatures); ours doesn't.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers = []
        lg.propagate = True
