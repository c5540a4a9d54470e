"""Functions the peers run. Importable (``bench.tasks``) so every peer pickles them by reference."""
from __future__ import annotations

import os
import time


def noop(*args):
    return None


def pid_after(delay: float = 0.0) -> int:
    if delay:
        time.sleep(delay)
    return os.getpid()


def sleep_task(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def numpy_task(n: int) -> float:
    import numpy as np

    a = np.full((n, n), 1.0 / n)
    b = a @ a
    b = b @ a
    return float(b[0, 0])


def make_big(mb: int, kind: str = "bytes"):
    """A result of ``mb`` MiB: ``bytes`` (in-band in a pickle) or a NumPy array (out-of-band
    buffer with pickle protocol 5)."""
    n = int(mb * 2**20)
    if kind == "numpy":
        import numpy as np

        out = np.empty(n, dtype=np.uint8)
        out[:] = 7
        out[:: 4096] = 1
        return out
    return b"\x07" * n
