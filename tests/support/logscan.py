"""The whole suite's log output, checked at the end for the secrets and personal values the tests used.

Every line the service's log handler writes (after its redacting filter, exactly as it would reach stderr) is kept,
and so are the log files of the live gunicorn servers. ``leaks()`` names each secret or personal value found.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from pathlib import Path

# Personal values the tests send (identity, phone and card numbers, e-mail addresses); never to be logged.
PERSONAL_VALUES = (
    "11010519491231002X",
    "110101199003074514",
    "13812345678",
    "+8613812345678",
    "6222021234567890128",
    "6222020200112233445",
    "li.lei@example.cn",
    "wang.fang@example.cn",
    "zhang.wei@example.cn",
    "wei@example.cn",
    "zhao.min@example.cn",
)
FULL_API_KEY = re.compile(r"gsk_[A-Za-z0-9]+_[A-Za-z0-9_-]{20,}")


class LogCollector:
    """Keeps every formatted log line of the service's handler and the registered server log files."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.files: list[Path] = []
        self.secrets: set[str] = set()
        self._lock = threading.Lock()
        self._wrapped: logging.Handler | None = None

    def attach(self) -> None:
        """Wrap the service handler's ``format`` (it runs after the handler's filters, on what is written)."""
        from govsvc.core.logging import configure_logging

        configure_logging("INFO")
        handler = next(h for h in logging.getLogger().handlers if getattr(h, "_govsvc", False))
        original = handler.format

        def format_and_keep(record: logging.LogRecord) -> str:
            text = original(record)
            with self._lock:
                self.lines.append(text)
            return text

        handler.format = format_and_keep  # type: ignore[method-assign]
        self._wrapped = handler

    def add_secret(self, value: str) -> None:
        if value:
            with self._lock:
                self.secrets.add(value)

    def add_file(self, path: Path) -> None:
        with self._lock:
            self.files.append(path)

    def texts(self) -> Iterable[tuple[str, str]]:
        yield "service log", "\n".join(self.lines)
        for path in self.files:
            if path.exists():
                yield str(path), path.read_text(encoding="utf-8", errors="replace")

    def leaks(self) -> list[str]:
        """One line per secret or personal value found in any collected log (values themselves not repeated)."""
        found = []
        for where, text in self.texts():
            for value in sorted(self.secrets):
                if value in text:
                    found.append(f"{where}: a secret used by the tests ({value[:6]}...)")
            for value in PERSONAL_VALUES:
                if value.lower() in text.lower():
                    found.append(f"{where}: the personal value {value[:3]}... ")
            for match in FULL_API_KEY.finditer(text):
                found.append(f"{where}: an API key {match.group(0)[:12]}...")
        return found


COLLECTOR = LogCollector()
