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
