"""Workloads shared by the diagnostics tests (not a test module)."""
from __future__ import annotations


def _sleepers(pool, n, seconds=8.0):
    """``n`` requests that hold a worker slot for ``seconds`` (cancel them when done)."""
    return [pool.submit_command("sleep", {"seconds": seconds}) for _ in range(n)]


def _cancel(futures):
    for f in futures:
        f.cancel()


def _allocate(session, mb):
    """Keep ``mb`` MiB of touched memory alive in the session's worker (pages written, so resident)."""
    session.run_code(f"import builtins\nbuiltins.__dict__.setdefault('_keep', []).append(b'\\x01' * ({mb} * 2**20))")
