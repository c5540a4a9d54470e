"""Process memory, measured now: RSS, USS, PSS and swap of processes and their descendants.

On Linux every figure comes from ``/proc``: the process table from ``/proc/<pid>/stat`` (one
read a process, no psutil), the memory of one process from one ``/proc/<pid>/smaps_rollup``
read. Elsewhere psutil gives what the OS has (USS/PSS/swap only where it has them).

The expensive part is ``smaps_rollup``: to produce USS and PSS the kernel walks the process's
page tables (≈ 0.3–0.8 ms for a 35 MB worker, kernel time). :func:`workers_memory` therefore
walks a worker again only when its memory may have changed since its last walk — see
:class:`RollupCache`. Everything else a call reads is cheap counters.

Used by :mod:`snakepit.lifecycle` (which re-exports these names), the diagnostics and the
workers themselves (``own_memory``). Imports only :mod:`snakepit.signals`, lazily.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Iterable

__all__ = [
    "ROLLUP_REUSE_MAX_S", "RollupCache", "children_map", "descendants", "has_children", "process_memory_bytes",
    "process_table", "worker_memory", "workers_memory",
]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_HAS_ROLLUP = os.path.exists("/proc/self/smaps_rollup")  # Linux ≥ 4.14
_HAS_PROC_STAT = os.path.exists("/proc/self/stat")
_MIB = float(2**20)
#: Below this many processes to walk, a memory read is not split over threads.
_PARALLEL_MIN = 16
#: A worker's last ``smaps_rollup`` figures are never reused when older than this (seconds).
ROLLUP_REUSE_MAX_S = 1.0

_ROLLUP_KEYS = {b"Rss:": "rss", b"Pss:": "pss", b"Swap:": "swap"}


def _rollup_bytes(pid: int) -> dict[str, int] | None:
    """RSS/USS/PSS/swap in bytes of one process from ``/proc/<pid>/smaps_rollup`` (one read).

    USS = Private_Clean + Private_Dirty + Private_Hugetlb, as psutil counts it. None when the
    file cannot be read (process gone, or one of the pids for which the kernel refuses it).
    """
    try:
        fd = os.open(f"/proc/{pid}/smaps_rollup", os.O_RDONLY)
    except OSError:
        return None
    try:
        data = os.read(fd, 8192)
    except OSError:
        return None
    finally:
        os.close(fd)
    out = {"rss": 0, "uss": 0, "pss": 0, "swap": 0}
    seen = False
    keys = _ROLLUP_KEYS
    for line in data.split(b"\n"):
        parts = line.split()
        if len(parts) < 2:
            continue
        head = parts[0]
        key = keys.get(head)
        if key is not None:
            out[key] = int(parts[1]) * 1024
            seen = seen or key == "rss"
        elif head.startswith(b"Private_"):
            out["uss"] += int(parts[1]) * 1024
    return out if seen else None


def _psutil_bytes(pid: int) -> dict[str, int] | None:
    """The same figures with psutil (other OSes; USS/PSS/swap only where psutil has them)."""
    try:
        import psutil

        proc = psutil.Process(pid)
        try:
            full = proc.memory_full_info()
        except Exception:
            full = proc.memory_info()
    except Exception:
        return None
    out = {"rss": int(full.rss)}
    for key in ("uss", "pss", "swap"):
        value = getattr(full, key, None)
        if value is not None:
            out[key] = int(value)
    return out


def process_memory_bytes(pid: int) -> dict[str, int] | None:
    """Memory of one process (not its children) in bytes: ``rss`` and, where the OS gives them, ``uss``, ``pss``, ``swap``."""
    if _HAS_ROLLUP:
        figures = _rollup_bytes(pid)
        if figures is not None:
            return figures
    return _psutil_bytes(pid)


Signature = tuple  # (starttime, minflt, majflt, vsize, rss) as /proc/<pid>/stat writes them (bytes)


def process_table() -> dict[int, tuple[int, Signature]] | None:
    """pid -> (ppid, signature) of every process, from one read of each ``/proc/<pid>/stat``.

    The signature is (start time, minor faults, major faults, virtual size, resident pages):
    see :class:`RollupCache` for what it tells. None where there is no ``/proc/<pid>/stat``.
    """
    if not _HAS_PROC_STAT:
        return None
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    table: dict[int, tuple[int, Signature]] = {}
    for name in entries:
        if not name.isdigit():
            continue
        try:
            fd = os.open(f"/proc/{name}/stat", os.O_RDONLY)
        except OSError:
            continue  # exited since the listing
        try:
            data = os.read(fd, 4096)
        except OSError:
            continue
        finally:
            os.close(fd)
        try:
            # after "pid (comm) ": state ppid pgrp session tty tpgid flags minflt cminflt majflt
            # cmajflt utime stime cutime cstime priority nice threads itreal starttime vsize rss …
            f = data[data.rindex(b")") + 2:].split(None, 22)
            table[int(name)] = (int(f[1]), (f[19], f[7], f[9], f[20], f[21]))
        except (ValueError, IndexError):
            continue
    return table or None


def _children_of(table: dict[int, tuple[int, Signature]]) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _sig) in table.items():
        children.setdefault(ppid, []).append(pid)
    return children


def children_map() -> dict[int, list[int]]:
    """ppid -> child pids of every process, from one scan of the process table."""
    table = process_table()  # Linux: /proc/<pid>/stat directly (psutil is ~10x slower)
    if table is not None:
        return _children_of(table)
    import psutil

    children: dict[int, list[int]] = {}
    for proc in psutil.process_iter(["ppid"]):
        children.setdefault(proc.info["ppid"], []).append(proc.pid)
    return children


def descendants(pid: int, children: dict[int, list[int]]) -> list[int]:
    """Every descendant of ``pid`` in a :func:`children_map`."""
    out: list[int] = []
    stack = list(children.get(pid, ()))
    while stack:
        child = stack.pop()
        out.append(child)
        stack.extend(children.get(child, ()))
    return out


def has_children() -> bool:
    """Whether this process has child processes (one system call; True when it cannot tell)."""
    waitid = getattr(os, "waitid", None)
    if waitid is None:
        return True
    try:
        # WNOWAIT: look only, reap nothing (subprocess / multiprocessing still see their children).
        waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    except OSError:
        return True
    return True


def _tree_mb(pids: list[int]) -> dict[str, float] | None:
    """MiB totals (``rss_mb``, and ``uss_mb``/``pss_mb``/``swap_mb`` when every process has them) of processes."""
    totals: dict[str, float] = {}
    counted = 0
    missing: set[str] = set()
    for i, pid in enumerate(pids):
        figures = process_memory_bytes(pid)
        if figures is None:
            if i == 0:
                return None  # the worker itself is gone
            continue  # a child that just exited
        counted += 1
        for key in ("rss", "uss", "pss", "swap"):
            if key in figures:
                totals[f"{key}_mb"] = totals.get(f"{key}_mb", 0.0) + figures[key] / _MIB
            else:
                missing.add(f"{key}_mb")
    for key in missing:
        totals.pop(key, None)
    return totals if counted else None


def _in_threads(fn: Any, items: list[Any]) -> list[Any]:
    """``[fn(x) for x in items]``, split over a few short-lived threads when there are many items.

    Reading ``smaps_rollup`` is kernel time (a page-table walk) with the GIL released, so it
    scales with the CPUs.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    n = min(4, cpus, len(items) // (_PARALLEL_MIN // 2))
    if n <= 1:
        return [fn(x) for x in items]
    from .signals import start_thread  # noqa: PLC0415 - only when there is a lot to read

    out: list[Any] = [None] * len(items)

    def run(k: int) -> None:
        for i in range(k, len(items), n):
            out[i] = fn(items[i])

    threads = [threading.Thread(target=run, args=(k,), name="snakepit-memory-read", daemon=True) for k in range(1, n)]
    for t in threads:
        start_thread(t)
    try:
        run(0)
    finally:
        for t in threads:
            t.join()
    return out


class RollupCache:
    """The last ``smaps_rollup`` figures of each measured process tree, and when they may be reused.

    A worker's tree (the worker and its descendants) is walked again unless *all* of this holds,
    checked at every call from the ``/proc/<pid>/stat`` that the process-table scan reads anyway:

    * the tree has the same processes, each with the same start time (no child started or
      exited, no pid reused);
    * each of them has the same minor and major page-fault counts, virtual size and resident
      pages as at the last walk. A page only becomes resident through a fault — a new
      allocation, a copy-on-write break of a page shared with the forkserver template, a
      swap-in — and unmapping or swapping out changes the virtual size or resident pages;
    * the worker's parent (the forkserver template, which shares pages with every worker) has
      the same signature and the same set of children: a worker started or gone changes how
      the shared pages split (PSS), a template writing to its pages changes what is shared;
    * the last walk is at most :data:`ROLLUP_REUSE_MAX_S` old. This bounds what the checks
      cannot see: the PSS share of a page changing because *another* process (a sibling
      worker, an unrelated one) started or stopped mapping it, and the few pages per CPU
      by which the kernel's resident-page counter may lag.

    So a figure that changed always shows at the next call: nothing a worker allocates, frees or
    writes is hidden. Thread-safe; one module-level instance serves every caller.
    """

    def __init__(self, max_age_s: float = ROLLUP_REUSE_MAX_S) -> None:
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        # root pid -> (family generation, tree signature, monotonic time of the walk, figures)
        self._trees: dict[int, tuple[int, tuple, float, dict[str, float] | None]] = {}
        # parent pid -> (its family key, generation number)
        self._families: dict[int, tuple[tuple, int]] = {}
        self._generation = 0
        self.walks = 0  # trees walked so far (for tests and profiling)
        self.reused = 0  # trees whose previous figures were reused

    def _family(self, ppid: int, table: dict[int, tuple[int, Signature]], children: dict[int, list[int]]) -> int:
        parent = table.get(ppid)
        key = (parent[1] if parent is not None else None,
               tuple(sorted((c, table[c][1][0]) for c in children.get(ppid, ()))))
        with self._lock:
            known = self._families.get(ppid)
            if known is not None and known[0] == key:
                return known[1]
            self._generation += 1
            self._families[ppid] = (key, self._generation)
            if len(self._families) > 256:
                for old in list(self._families)[:128]:
                    del self._families[old]
            return self._generation

    def measure(self, pids: list[int], table: dict[int, tuple[int, Signature]]) -> dict[int, dict[str, float] | None]:
        children = _children_of(table)
        now = time.monotonic()
        families: dict[int, int] = {}
        out: dict[int, dict[str, float] | None] = {}
        todo: list[tuple[int, list[int], tuple[int, tuple] | None]] = []
        trees = self._trees
        for pid in pids:
            entry = table.get(pid)
            if entry is None:  # gone, or hidden from this /proc: read it directly, never reuse
                todo.append((pid, [pid], None))
                continue
            tree = [pid] + descendants(pid, children) if pid in children else [pid]
            ppid = entry[0]
            gen = families.get(ppid)
            if gen is None:
                gen = families[ppid] = self._family(ppid, table, children)
            sig = tuple([table[p][1] for p in tree]) if len(tree) > 1 else (entry[1],)
            key = (gen, (tuple(tree), sig))
            last = trees.get(pid)
            if last is not None and last[0] == gen and last[1] == key[1] and now - last[2] <= self.max_age_s:
                figures = last[3]
                out[pid] = dict(figures) if figures is not None else None
                continue
            todo.append((pid, tree, key))
        results = _in_threads(_tree_mb, [tree for _, tree, _ in todo])
        with self._lock:
            self.walks += len(todo)
            self.reused += len(pids) - len(todo)
            for (pid, _tree, key), figures in zip(todo, results):
                out[pid] = figures
                if key is not None and figures is not None:
                    trees[pid] = (key[0], key[1], now, dict(figures))
                else:
                    trees.pop(pid, None)
            if len(trees) > 2 * len(pids) + 64:  # forget processes that are gone
                for old in [p for p in trees if p not in table]:
                    del trees[old]
        return out


_CACHE = RollupCache()


def worker_memory(pid: int) -> dict[str, float] | None:
    """RSS/USS/PSS/swap in MiB of a worker process plus its children (USS/PSS where the OS gives them)."""
    return workers_memory([pid]).get(pid)


def workers_memory(pids: Iterable[int], *, reuse: bool = True) -> dict[int, dict[str, float] | None]:
    """``worker_memory(pid)`` for many workers: one scan of the process table, then the memory
    of each worker's tree (the worker and its descendants).

    Measured now. On Linux a tree whose processes show no change since its last
    ``smaps_rollup`` walk (:class:`RollupCache`) keeps that walk's figures; the others are
    walked again, spread over up to 4 threads. ``reuse=False`` walks every tree.
    """
    pids = list(pids)
    try:
        table = process_table()
    except Exception:
        table = None
    if table is not None and reuse:
        return _CACHE.measure(pids, table)
    try:
        children = _children_of(table) if table is not None else children_map()
    except Exception:
        children = {}
    trees = [[pid] + descendants(pid, children) for pid in pids]
    return dict(zip(pids, _in_threads(_tree_mb, trees)))


def own_memory(children: bool | None = None) -> tuple[dict[str, int], int] | None:
    """This process's memory plus its children's, bytes (``rss`` and ``uss``/``pss``/``swap`` where
    available), and the number of children counted. What a worker reports about itself.

    The process table is scanned only when this process has children (``children``, or
    :func:`has_children` when None).
    """
    pid = os.getpid()
    if children is None:
        children = has_children()
    kids = descendants(pid, children_map()) if children else []
    totals: dict[str, int] = {}
    missing: set[str] = set()
    counted = 0
    for i, p in enumerate([pid] + kids):
        figures = process_memory_bytes(p)
        if figures is None:
            if i == 0:
                return None
            continue
        counted += 1
        for key in ("rss", "uss", "pss", "swap"):
            if key in figures:
                totals[key] = totals.get(key, 0) + figures[key]
            else:
                missing.add(key)
    for key in missing:
        totals.pop(key, None)
    return totals, counted - 1


def _statm_rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.Process(pid).memory_info().rss)
    except Exception:
        return None


def workers_rss_mb(pids: Iterable[int]) -> dict[int, float]:
    """RSS in MiB of each worker plus its children (cheap: no USS/PSS), one process-table scan."""
    out: dict[int, float] = {}
    pids = list(pids)
    try:
        children = children_map()
    except Exception:
        return out
    for pid in pids:
        own = _statm_rss(pid)
        if own is None:
            continue
        total = own
        for child in descendants(pid, children):
            total += _statm_rss(child) or 0
        out[pid] = total / _MIB
    return out
