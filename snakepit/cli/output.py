"""What every command prints with: the console, line output, number formats, banners, JSON."""
from __future__ import annotations

import json
import os
import sys
from typing import Any

RULE = "=" * 80
THIN = "-" * 80


class CLIError(Exception):
    """An error the CLI reports and exits 1 on (as ``{"error": ...}`` in JSON mode)."""


def make_console(stderr: bool = False) -> Any:
    from rich.console import Console  # noqa: PLC0415

    width = None
    if not sys.stdout.isatty():
        width = 110
    return Console(stderr=stderr, width=width, highlight=False, emoji=False, soft_wrap=False)


class Out:
    """Prints lines through rich (colours on a terminal, plain text otherwise)."""

    def __init__(self, console: Any) -> None:
        self.console = console

    def __call__(self, text: str = "", style: str | None = None) -> None:
        self.console.print(text, style=style, markup=False, highlight=False, emoji=False)

    def print(self, renderable: Any) -> None:
        self.console.print(renderable)


def fmt_num(value: Any, digits: int = 1) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, rem = divmod(seconds, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def banner(out: Out, title: str, before: bool = True) -> None:
    out()
    out(RULE)
    out(title, "bold")
    out(RULE)
    out()


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, allow_nan=False) + "\n")


def short_command(command: str) -> str:
    """``/usr/bin/python3 /home/me/app.py -x`` → ``python3 app.py -x``."""
    parts = command.split(" ")
    if "-c" in parts:  # python -c '<a whole script>'
        parts = parts[: parts.index("-c") + 1] + ["…"]
    return " ".join(os.path.basename(p) if os.sep in p and "\n" not in p else p for p in parts)
