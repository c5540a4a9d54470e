"""What ``%%snakepit_run`` writes into the cell while it runs: streamed lines and the ``--all`` bar."""
from __future__ import annotations

import sys
import time
from typing import Any, Callable

__all__ = ["AllProgress", "LineWriter"]


class LineWriter:
    """Writes streamed chunks to the kernel's stdout/stderr, optionally prefixing every line."""

    def __init__(self, prefix: Callable[[str], str] | None = None) -> None:
        self.prefix = prefix
        self.partial: dict[str, str] = {}

    def _target(self, stream: str):  # noqa: ANN202
        return sys.stderr if stream == "stderr" else sys.stdout

    def write(self, stream: str, text: str, label: str = "") -> None:
        target = self._target(stream)
        if self.prefix is None:
            target.write(text)
            if "\n" in text:
                target.flush()
            return
        key = f"{label}\0{stream}"
        buf = self.partial.get(key, "") + text
        *complete, rest = buf.split("\n")
        self.partial[key] = rest
        if complete:
            pre = self.prefix(label if stream == "stdout" else f"{label}:{stream}")
            target.write("".join(f"{pre}{line}\n" for line in complete))
            target.flush()

    def finish(self) -> None:
        if self.prefix is None:
            sys.stdout.flush()
            sys.stderr.flush()
            return
        for key, rest in list(self.partial.items()):
            if rest:
                label, stream = key.split("\0")
                self._target(stream).write(f"{self.prefix(label)}{rest}\n")
        self.partial.clear()
        sys.stdout.flush()
        sys.stderr.flush()


class AllProgress:
    """The ``%%snakepit_run --all`` bar (``tqdm.auto``): workers done / total and failures.

    ``wanted`` None shows it once the cell has run for ``AFTER_S`` (quick cells stay quiet),
    True at once, False never. Without tqdm there is no bar (a note if it was asked for).
    """

    AFTER_S = 2.0

    def __init__(self, pool_name: str, total: int, wanted: bool | None) -> None:
        self.pool_name, self.total, self.wanted = pool_name, total, wanted
        self.started = time.monotonic()
        self.bar: Any = None
        self.shown = 0
        if wanted:
            self._open()

    def _open(self) -> None:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            if self.wanted:
                print('--progress needs tqdm: pip install "snakepit[ecosystem]"', file=sys.stderr)
            self.wanted = False
            return
        self.bar = tqdm(total=self.total, desc=f"%%snakepit_run --all [{self.pool_name}]", unit="worker")

    def tick(self, done: int, failed: int) -> None:
        if self.bar is None:
            if self.wanted is False or time.monotonic() - self.started < self.AFTER_S:
                return
            self._open()
            if self.bar is None:
                return
        finished = done + failed
        if finished > self.shown:
            self.bar.update(finished - self.shown)
            self.shown = finished
            if failed:
                self.bar.set_postfix(failures=failed)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
