"""A logging handler that keeps each record as the JSON object the services would print."""

from __future__ import annotations

import json
import logging

from services.common.logs import JsonFormatter


class LogCapture(logging.Handler):
    def __init__(self, service: str = "kit") -> None:
        super().__init__()
        self.setFormatter(JsonFormatter(service))
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))
