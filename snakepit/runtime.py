"""The private runtime directory: worker sockets and admin discovery files live here.

``$SNAKEPIT_RUNTIME_DIR``, else ``$XDG_RUNTIME_DIR/snakepit``, else ``/tmp/snakepit-<uid>``;
created 0700 and refused if another user owns it. Each manager process gets its own
subdirectory ``<pid>-<random>`` (0700), removed at exit; those of dead processes are swept.
"""
from __future__ import annotations

import atexit
import itertools
import os
import secrets
import shutil
import stat
import threading

__all__ = ["base_dir", "process_dir", "new_socket_path", "sweep_stale"]

_lock = threading.Lock()
_process_dir: str | None = None
_counter = itertools.count(1)


def base_dir() -> str:
    """The per-user runtime directory (created 0700 if missing)."""
    path = os.environ.get("SNAKEPIT_RUNTIME_DIR")
    if not path:
        xdg = os.environ.get("XDG_RUNTIME_DIR")
        path = os.path.join(xdg, "snakepit") if xdg and os.path.isdir(xdg) else f"/tmp/snakepit-{os.getuid()}"
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise PermissionError(f"snakepit runtime directory {path!r} is not a directory owned by you")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)
    return path


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> list[str]:
    """Remove the subdirectories (and discovery files) left by dead manager processes."""
    removed = []
    base = base_dir()
    for name in os.listdir(base):
        pid_txt = name.split("-", 1)[0].split(".", 1)[0]
        if not pid_txt.isdigit() or pid_alive(int(pid_txt)):
            continue
        path = os.path.join(base, name)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
            removed.append(path)
        except OSError:
            pass
    return removed


def process_dir() -> str:
    """This process's own private directory (created on first use, removed at exit)."""
    global _process_dir
    with _lock:
        if _process_dir is None or not os.path.isdir(_process_dir) or not _process_dir.split(os.sep)[-1].startswith(f"{os.getpid()}-"):
            sweep_stale()
            path = os.path.join(base_dir(), f"{os.getpid()}-{secrets.token_hex(4)}")
            os.mkdir(path, 0o700)
            _process_dir = path
            atexit.register(_remove, path)
        return _process_dir


def _remove(path: str) -> None:
    if path.split(os.sep)[-1].startswith(f"{os.getpid()}-"):
        shutil.rmtree(path, ignore_errors=True)


def new_socket_path(prefix: str = "w") -> str:
    """A fresh socket path in this process's directory (short: Unix paths max 107 bytes)."""
    return os.path.join(process_dir(), f"{prefix}{next(_counter)}.sock")
