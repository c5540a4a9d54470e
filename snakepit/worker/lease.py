"""The lease of a cluster worker: it exits when its manager stops renewing.

A worker on another host cannot watch the kernel's process, so it holds a lease instead:
every authenticated RPC renews it (the pool's heartbeat Ping, and the Dask backend's own
renewal Ping every third of the lease). When no renewal came for ``seconds`` — the kernel
was SIGKILLed, or the network to it is gone — the worker exits (code 75). Before the first
renewal the worker allows ``first`` seconds (the pool may still be starting others).
"""
from __future__ import annotations

import os
import sys
import threading
import time

EXPIRED_EXIT_CODE = 75


class Lease:
    def __init__(self, seconds: float, first: float | None = None) -> None:
        self.seconds = float(seconds)
        self._deadline = time.monotonic() + float(first if first is not None else seconds)
        self._thread: threading.Thread | None = None

    def renew(self) -> None:
        # One float store: safe from the gRPC loop thread without a lock.
        self._deadline = time.monotonic() + self.seconds  # the first grace ends with the first renewal

    def remaining(self) -> float:
        return self._deadline - time.monotonic()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="snakepit-lease", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while True:
            left = self.remaining()
            if left <= 0:
                print(f"snakepit worker {os.getpid()}: lease expired (no renewal for {self.seconds:g}s); exiting",
                      file=sys.stderr, flush=True)
                os._exit(EXPIRED_EXIT_CODE)
            time.sleep(min(left, 0.5))
