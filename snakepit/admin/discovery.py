"""Discovery files: how a pool manager is found, and reached, from another process.

A manager that publishes its admin endpoint writes ``<runtime dir>/<pid>.admin.json``
(mode 0600, like a Jupyter connection file): pid, socket path, token, start times, pool
names. :func:`discover` reads them back as :class:`Manager` records, keeps the live ones
and removes those of dead processes.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import time
from typing import Any

from .. import runtime

log = logging.getLogger("snakepit.admin")

TOKEN_METADATA_KEY = "x-snakepit-token"
DISCOVERY_SUFFIX = ".admin.json"


def snakepit_version() -> str:
    try:
        from .. import __version__  # noqa: PLC0415

        return str(__version__)
    except Exception:
        return "?"


def process_start_time(pid: int) -> float | None:
    try:
        import psutil  # noqa: PLC0415

        return float(psutil.Process(pid).create_time())
    except Exception:
        return None


def write_discovery(path: str, data: dict[str, Any]) -> None:
    """(Re)write a discovery file atomically, mode 0600."""
    tmp = f"{path}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


@dataclasses.dataclass(frozen=True)
class Manager:
    """A live pool manager process found by :func:`discover` (its discovery file's content)."""

    pid: int
    socket: str
    token: str = dataclasses.field(repr=False)
    path: str = ""
    started_at: float | None = None
    published_at: float | None = None
    pools: tuple[str, ...] = ()
    version: str = ""
    python: str = ""

    @property
    def uptime_s(self) -> float | None:
        return time.time() - self.started_at if self.started_at else None


def read_discovery(path: str) -> Manager | None:
    """Parse one discovery file; None if it is not ours, not private, or malformed."""
    try:
        st = os.stat(path)
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            log.warning("ignoring %s: not a private file of this user", path)
            return None
        with open(path) as fh:
            data = json.load(fh)
        return Manager(
            pid=int(data["pid"]), socket=str(data["socket"]), token=str(data["token"]), path=path,
            started_at=data.get("started_at"), published_at=data.get("published_at"),
            pools=tuple(data.get("pools") or ()), version=str(data.get("version", "")),
            python=str(data.get("python", "")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def alive(manager: Manager) -> bool:
    if not runtime.pid_alive(manager.pid):
        return False
    if manager.started_at is not None:  # the pid may have been reused by another process
        started = process_start_time(manager.pid)
        if started is not None and abs(started - manager.started_at) > 2.0:
            return False
    return os.path.exists(manager.socket)


def discover(*, include_self: bool = True, cleanup: bool = True) -> list[Manager]:
    """The live pool managers of this user on this machine, oldest first.

    Discovery files of dead processes are removed (with ``cleanup``), together with the
    runtime directories those processes left behind.

    Example::

        >>> [(m.pid, m.pools) for m in snakepit.admin.discover()]     # doctest: +SKIP
        [(4242, ('default', 'hpc'))]
    """
    base = runtime.base_dir()
    found: list[Manager] = []
    stale = False
    for name in sorted(os.listdir(base)):
        if not name.endswith(DISCOVERY_SUFFIX):
            continue
        path = os.path.join(base, name)
        manager = read_discovery(path)
        if manager is None:
            continue
        if not alive(manager):
            stale = True
            if cleanup:
                try:
                    os.unlink(path)
                except OSError:
                    pass
            continue
        if not include_self and manager.pid == os.getpid():
            continue
        found.append(manager)
    if stale and cleanup:
        try:
            runtime.sweep_stale()
        except OSError:
            pass
    found.sort(key=lambda m: (m.started_at or 0.0, m.pid))
    return found
