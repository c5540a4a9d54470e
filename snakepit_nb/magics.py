"""IPython magics: ``%snakepit_inspect`` and ``%%snakepit_run``.

Load them with ``%load_ext snakepit_nb``. Options are declared with IPython's
``magic_arguments``, so ``%snakepit_inspect?`` and ``%%snakepit_run?`` show real help.

Example (in a notebook)::

    %load_ext snakepit_nb

    %%snakepit_run --pull total
    import time
    print("working ...")
    time.sleep(1)
    total = sum(range(10))
    total * 2

    %snakepit_inspect --detailed --recommendations
    df = %snakepit_inspect --frame workers
"""
from __future__ import annotations

import inspect
import queue
import sys
import threading
import time
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

import snakepit
from snakepit.signals import start_thread

from . import _diag, _render
from ._cell_output import AllProgress, LineWriter

__all__ = ["CellInterrupted", "RemoteCellError", "SnakepitMagics", "load_ipython_extension"]

FRAMES = ("pools", "workers", "memory", "history", "recommendations", "adaptive")

NO_POOL_MESSAGE = (
    "No snakepit pool is running.\n"
    "Start one with:\n"
    "    import snakepit\n"
    "    snakepit.start_pool(\"default\", profile=\"process\", pool_size=4)\n"
    "or just run a %%snakepit_run cell: it starts the \"default\" pool for you."
)


# --------------------------------------------------------------------------- errors shown in cells
class RemoteCellError(snakepit.RemoteError):
    """The cell raised on a worker. Shown with the *worker's* traceback (not the magic's).

    It is a :class:`snakepit.RemoteError`, so ``except snakepit.RemoteError`` catches it.
    """

    def __init__(self, error: snakepit.RemoteError, source: str, pool: str) -> None:
        super().__init__(error.remote_type, error.remote_message, error.remote_traceback,
                         exception=error.exception, worker_id=error.worker_id, command=error.command)
        self.source = source
        self.pool = pool

    def _render_traceback_(self) -> list[str]:
        red, bold, reset = "\x1b[0;31m", "\x1b[1m", "\x1b[0m"
        where = f"worker {self.worker_id}" if self.worker_id else "a worker"
        head = f"{red}{bold}Remote exception on {where} of pool {self.pool!r}{reset}"
        return [head] + clean_remote_traceback(self.remote_traceback, self.source).splitlines()


class CellInterrupted(KeyboardInterrupt):
    """The kernel was interrupted while a cell ran on the pool; the remote work was cancelled."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def _render_traceback_(self) -> list[str]:
        return ["\x1b[0;33mKeyboardInterrupt\x1b[0m: " + self.message]


class CellFailed(snakepit.SnakepitError):
    """The cell could not run to the end (timeout, crashed worker, closed pool, ...)."""

    def __init__(self, error: BaseException, note: str = "") -> None:
        super().__init__(f"{type(error).__name__}: {error}{note}")
        self.error = error

    def _render_traceback_(self) -> list[str]:
        return ["\x1b[0;31m" + str(self) + "\x1b[0m"]


def clean_remote_traceback(text: str, source: str | None = None) -> str:
    """Drop snakepit's own frames from a worker traceback and show the cell's source lines.

    >>> tb = ('Traceback (most recent call last):\\n'
    ...       '  File "/x/snakepit/worker/builtin.py", line 138, in run_code\\n'
    ...       '    exec(compile(tree, filename, "exec"), ns)\\n'
    ...       '  File "<snakepit-cell>", line 2, in <module>\\n'
    ...       'ZeroDivisionError: division by zero\\n')
    >>> print(clean_remote_traceback(tb, "x = 1\\n1/0"))
    Traceback (most recent call last):
      File "<snakepit-cell>", line 2, in <module>
        1/0
    ZeroDivisionError: division by zero
    """
    lines = text.rstrip("\n").splitlines()
    cell_lines = source.splitlines() if source else []
    out: list[str] = []
    skipping = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("  File "):
            skipping = ("snakepit/worker/" in line or "snakepit\\worker\\" in line)
            if not skipping:
                out.append(line)
                if '"<snakepit-cell' in line and cell_lines:
                    # The worker has no source for the cell: add the line that failed.
                    try:
                        lineno = int(line.split(", line ", 1)[1].split(",", 1)[0])
                    except (IndexError, ValueError):
                        lineno = 0
                    has_source = i + 1 < len(lines) and lines[i + 1].startswith("    ")
                    if 1 <= lineno <= len(cell_lines) and not has_source:
                        out.append("    " + cell_lines[lineno - 1].strip())
            i += 1
            continue
        if line.startswith("    ") and skipping:
            i += 1
            continue
        skipping = False
        out.append(line)
        i += 1
    return "\n".join(out)


# --------------------------------------------------------------------------- helpers
class _Repr:
    """Displays a worker-made ``repr`` of a value that could not travel back."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _names(text: str | None) -> list[str]:
    if not text:
        return []
    names = [n.strip() for n in text.replace(" ", ",").split(",") if n.strip()]
    for n in names:
        if not n.isidentifier():
            raise UsageError(f"{n!r} is not a variable name")
    return names


def _in_flight(pool: snakepit.Pool) -> int:
    try:
        return int(pool.statistics().get("in_flight", 0))
    except Exception:  # noqa: BLE001
        return -1


def _wait_slots_free(pool: snakepit.Pool, before: int, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pool.closed or _in_flight(pool) <= before:
            return True
        time.sleep(0.05)
    return _in_flight(pool) <= before


# --------------------------------------------------------------------------- shared option groups
def _pool_option(fn):  # noqa: ANN001, ANN202
    return argument("--pool", "-p", default=None, metavar="P",
                    help="the pool to use (default: 'default'; started if no pool runs)")(fn)


def _frame_option(fn):  # noqa: ANN001, ANN202
    return argument("--frame", default=None, choices=FRAMES,
                    help="return a pandas DataFrame instead of showing a report: "
                         "pools | workers | memory | history | recommendations | adaptive "
                         "(the pool.adapt decisions)")(fn)


@magics_class
class SnakepitMagics(Magics):
    """The snakepit magics. Registered by ``%load_ext snakepit_nb``."""

    # ------------------------------------------------------------------ %snakepit_inspect
    @magic_arguments()
    @argument("pool_name", nargs="?", default=None, metavar="POOL",
              help="inspect this pool only (default: every running pool)")
    @argument("--detailed", "-d", action="store_true",
              help="add the worker table (pid, status, load/capacity, requests, memory, uptime) and memory figures")
    @argument("--recommendations", "-r", action="store_true", help="add the inspector's recommendations")
    @argument("--format", "-f", default=None, choices=("text", "json", "html"),
              help="force one output format (default: HTML in a notebook, text in a terminal)")
    @argument("--live", "-l", action="store_true",
              help="show the live panel (gauges, worker table, memory chart, controls) instead; "
                   "running it again replaces the previous one")
    @argument("--interval", type=float, default=1.0, help="refresh interval of --live, in seconds (default 1)")
    @_frame_option
    @argument("--out", "-o", default=None, metavar="NAME", help="store the live panel in this variable")
    @line_magic
    def snakepit_inspect(self, line: str = "") -> Any:
        """Inspect the running snakepit pools: utilization, capacity, queue, workers, memory.

        Examples::

            %snakepit_inspect                         # every pool, one card each
            %snakepit_inspect hpc --detailed --recommendations
            %snakepit_inspect --format json           # keyed by pool name
            df = %snakepit_inspect --frame workers    # a pandas DataFrame
            %snakepit_inspect --live                  # the live panel
        """
        args = parse_argstring(self.snakepit_inspect, line)
        if args.interval <= 0:
            raise UsageError("--interval must be a positive number of seconds")
        pools = snakepit.list_pools()
        if args.pool_name is not None:
            try:
                pools = [snakepit.get_pool(args.pool_name)]
            except snakepit.PoolNotFoundError:
                running = ", ".join(repr(p.name) for p in snakepit.list_pools()) or "none"
                raise UsageError(
                    f"no pool named {args.pool_name!r} is running (running: {running}). "
                    f"Start it with snakepit.start_pool({args.pool_name!r}).") from None
        if args.live:
            from .panel import Panel

            previous = getattr(self, "_live_panel", None)
            if previous is not None:
                previous.close()  # re-running the cell replaces its panel instead of adding a thread
            panel = Panel(pools=[p.name for p in pools] if args.pool_name else None, interval=args.interval)
            self._live_panel = panel
            if args.out:
                self.shell.user_ns[args.out] = panel
            from IPython.display import display

            display(panel)
            return None
        if args.frame:
            return self._frame(args.frame, pools)
        if not pools:
            print(NO_POOL_MESSAGE)
            return None
        snaps = [_diag.snapshot(p, recommendations=args.recommendations) for p in pools]
        opts = {"detailed": args.detailed, "recommendations": args.recommendations}
        fmt = args.format
        if fmt == "json":
            print(_render.render_json(snaps, **opts))
        elif fmt == "text":
            print(_render.render_text(snaps, **opts))
        else:
            from IPython.display import display

            bundle = {"text/html": _render.render_html(snaps, **opts)}
            if fmt is None:
                bundle["text/plain"] = _render.render_text(snaps, **opts)
            display(bundle, raw=True)
        return None

    def _frame(self, kind: str, pools: list[snakepit.Pool]) -> Any:
        import pandas as pd

        if not pools:
            print(NO_POOL_MESSAGE)
            return pd.DataFrame()
        if kind == "pools":
            rows = []
            for p in pools:
                stats = _diag.diag("get_pool_stats")(p)
                row = {k: v for k, v in stats.to_dict().items() if k != "workers"}
                row["level"] = _diag.level_of(row.get("utilization_percent"))
                st = p.statistics()
                for key in ("queue_depth", "in_flight", "completed", "failed"):
                    row.setdefault(key, st.get(key, 0))
                rows.append(row)
            return pd.DataFrame(rows)
        getter = {
            "workers": lambda p: _diag.diag("get_pool_stats")(p).to_frame(),
            "memory": lambda p: _diag.diag("get_memory_stats")(p).to_frame(),
            "history": lambda p: _as_frame(_diag.diag("get_history")(p)),
            "recommendations": lambda p: _diag.diag("get_recommendations")(p).to_frame(),
            "adaptive": _adaptive_frame,
        }[kind]
        frames = []
        for p in pools:
            df = getter(p)
            if "pool" not in df.columns and "pool_name" not in df.columns:
                df.insert(0, "pool", p.name)
            frames.append(df)
        if len(frames) == 1:
            return frames[0]
        return pd.concat(frames, ignore_index=True)

    # ------------------------------------------------------------------ %%snakepit_run
    @magic_arguments()
    @_pool_option
    @argument("--session", "-s", default=None, metavar="S",
              help="keep the namespace between cells: same worker, same variables")
    @argument("--all", "-a", action="store_true", dest="all_workers",
              help="run on every worker; outputs are labelled per worker (like %%%%px)")
    @argument("--timeout", "-t", type=float, default=None, metavar="T", help="cancel the cell after T seconds")
    @argument("--progress", action="store_true", default=None, dest="progress",
              help="with --all: show a progress bar of workers done at once (default: after 2 s of work)")
    @argument("--no-progress", action="store_false", dest="progress", help="with --all: never show the bar")
    @argument("--push", default=None, metavar="a,b", help="send these kernel variables to the worker first")
    @argument("--pull", default=None, metavar="x,y",
              help="bring these worker variables back into the kernel (with --all: a dict per worker)")
    @argument("--out", "-o", default=None, metavar="NAME",
              help="store the snakepit.RunResult (with --all: a dict of them per worker) in NAME")
    @cell_magic
    def snakepit_run(self, line: str, cell: str) -> Any:
        """Run the cell on a snakepit worker; its output streams into the cell while it runs.

        The value of the last expression is displayed; an exception shows the worker's
        traceback; interrupting the kernel (the stop button) cancels the remote work.
        With no pool running, the "default" pool is started.

        Examples::

            %%snakepit_run
            import os, time
            print("hello from", os.getpid()); time.sleep(1); print("done")

            %%snakepit_run --push data --pull total --session s1
            total = sum(data)

            %%snakepit_run --all
            import os; os.getpid()
        """
        args = parse_argstring(self.snakepit_run, line)
        if args.timeout is not None and args.timeout <= 0:
            raise UsageError("--timeout must be a positive number of seconds")
        push_names, pull = _names(args.push), _names(args.pull)
        ns = self.shell.user_ns
        missing = [n for n in push_names if n not in ns]
        if missing:
            raise UsageError(f"--push: not defined in the kernel: {', '.join(missing)}")
        push = {n: ns[n] for n in push_names}
        pool = self._pool_for_run(args.pool)
        if args.all_workers:
            return self._run_all(pool, cell, args, push, pull)
        return self._run_one(pool, cell, args, push, pull)

    def _pool_for_run(self, name: str | None) -> snakepit.Pool:
        if name is not None:
            try:
                return snakepit.get_pool(name)
            except snakepit.PoolNotFoundError:
                if name != "default":
                    running = ", ".join(repr(p.name) for p in snakepit.list_pools()) or "none"
                    raise UsageError(f"no pool named {name!r} is running (running: {running}). "
                                     f"Start it with snakepit.start_pool({name!r}).") from None
        else:
            pools = snakepit.list_pools()
            for p in pools:
                if p.name == "default":
                    return p
            if len(pools) == 1:
                return pools[0]
            if pools:
                raise UsageError("several pools run and none is called 'default': choose one with --pool "
                                 + " / ".join(p.name for p in pools))
        pool = snakepit.start_pool("default", exist_ok=True)
        print(f"snakepit: started pool 'default' ({pool.config.profile} profile, "
              f"{len(pool.list_workers())} workers). Stop it with snakepit.stop_pool('default').")
        return pool

    def _run_one(self, pool: snakepit.Pool, cell: str, args: Any, push: dict, pull: list[str]) -> Any:
        writer = LineWriter()
        before = _in_flight(pool)
        pids_before = {w.worker_id: w.pid for w in pool.list_workers()}
        try:
            result = pool.run_code(cell, args.session, push=push, pull=pull, on_output=writer.write,
                                   timeout=args.timeout)
        except KeyboardInterrupt:
            writer.finish()
            raise CellInterrupted(self._interrupt_message(pool, args, before, pids_before)) from None
        except snakepit.RemoteError as exc:
            writer.finish()
            raise RemoteCellError(exc, cell, pool.name) from None
        except snakepit.SnakepitError as exc:
            writer.finish()
            note = ""
            if isinstance(exc, snakepit.RequestTimeoutError):
                note = " (the remote work was cancelled)"
            raise CellFailed(exc, note) from None
        writer.finish()
        self._store(result.pulled, result.missing, args, result, result.worker_id)
        if result.result is not None:
            return result.result
        if result.result_repr is not None:
            return _Repr(result.result_repr)
        return None

    @staticmethod
    def _interrupt_message(pool: snakepit.Pool, args: Any, before: int, pids_before: dict[str, int]) -> str:
        freed = _wait_slots_free(pool, before)
        where = f"pool {pool.name!r}" + (f", session {args.session!r}" if args.session else "")
        if not freed:
            return (f"interrupted: cancellation was sent to {where}; the worker has not stopped yet "
                    "(snakepit kills and replaces a worker that ignores the cancellation).")
        alive = {w.worker_id for w in pool.list_workers()}
        gone = [f"{wid} (pid {pid})" for wid, pid in pids_before.items() if wid not in alive]
        if gone:
            return (f"interrupted: the remote work on {where} was cancelled; its worker {', '.join(gone)} did "
                    "not stop in time and was killed and replaced (its session namespaces are gone). "
                    "The worker slot is free again.")
        return f"interrupted: the remote work on {where} was cancelled and its worker slot is free again."

    def _store(self, pulled: dict, missing: list[str], args: Any, result: Any, worker_id: Any) -> None:
        ns = self.shell.user_ns
        ns.update(pulled)
        if missing:
            print(f"--pull: not defined on worker {worker_id}: {', '.join(missing)}", file=sys.stderr)
        if args.out:
            ns[args.out] = result

    def _run_all(self, pool: snakepit.Pool, cell: str, args: Any, push: dict, pull: list[str]) -> None:
        from IPython.display import display

        workers = [w.worker_id for w in pool.list_workers() if w.status in ("available", "busy")]
        if not workers:
            raise UsageError(f"pool {pool.name!r} has no live workers")
        events: queue.SimpleQueue = queue.SimpleQueue()
        cancel = threading.Event()
        # A snakepit whose run_code accepts ``cancel=`` (an Event) can stop a silent worker too.
        can_cancel = "cancel" in inspect.signature(pool.run_code).parameters
        extra = {"cancel": cancel} if can_cancel else {}
        before = _in_flight(pool)

        def run(wid: str) -> None:
            def on_output(stream: str, text: str) -> None:
                if cancel.is_set():
                    raise KeyboardInterrupt  # closes the stream: snakepit cancels the remote work
                events.put(("out", wid, stream, text))

            try:
                res = pool.run_code(cell, args.session, push=push, pull=pull, on_output=on_output,
                                    timeout=args.timeout, worker_id=wid, **extra)
                events.put(("done", wid, res, None))
            except BaseException as exc:  # noqa: BLE001 - handed to the kernel thread
                events.put(("done", wid, None, exc))

        threads = [threading.Thread(target=run, args=(wid,), name=f"snakepit-nb-run-{wid}", daemon=True)
                   for wid in workers]
        for t in threads:
            start_thread(t)
        writer = LineWriter(prefix=lambda label: f"[{label}] ")
        results: dict[str, Any] = {}
        errors: dict[str, BaseException] = {}
        bar = AllProgress(pool.name, len(workers), args.progress)
        try:
            while len(results) + len(errors) < len(workers):
                try:
                    kind, wid, a, b = events.get(timeout=0.1)
                except queue.Empty:
                    bar.tick(len(results), len(errors))
                    continue
                if kind == "out":
                    writer.write(a, b, label=f"stdout:{wid}")
                elif b is not None:
                    errors[wid] = b
                else:
                    results[wid] = a
                bar.tick(len(results), len(errors))
        except KeyboardInterrupt:
            bar.close()
            cancel.set()
            writer.finish()
            running = [w for w in workers if w not in results and w not in errors]
            if can_cancel:
                for t in threads:
                    t.join(timeout=10.0)
                freed = _wait_slots_free(pool, before, timeout=5.0)
                raise CellInterrupted(
                    f"interrupted: the cell was cancelled on {len(running)} of {len(workers)} workers "
                    f"({', '.join(running)})" + ("; their slots are free again." if freed else
                                                 "; they have not all stopped yet.")) from None
            raise CellInterrupted(
                f"interrupted while {len(running)} of {len(workers)} workers still ran the cell "
                f"({', '.join(running)}). Workers that print are cancelled at their next output; "
                "a silent one finishes its cell (snakepit's run_code cannot yet be cancelled from "
                "another thread).") from None
        bar.close()
        writer.finish()
        for wid in workers:
            res = results.get(wid)
            if res is not None and (res.result is not None or res.result_repr is not None):
                text = res.result_repr if res.result_repr is not None else repr(res.result)
                display({"text/plain": f"Out[{wid}]: {text}"}, raw=True)
        ns = self.shell.user_ns
        for name in pull:
            ns[name] = {wid: r.pulled[name] for wid, r in results.items() if name in r.pulled}
            lacking = [wid for wid, r in results.items() if name not in r.pulled]
            if lacking:
                print(f"--pull: {name} not defined on {', '.join(lacking)}", file=sys.stderr)
        if args.out:
            ns[args.out] = {**results, **errors}
        if errors:
            wid, exc = next(iter(errors.items()))
            if len(errors) > 1:
                print(f"the cell failed on {len(errors)} workers: {', '.join(errors)}", file=sys.stderr)
            if isinstance(exc, snakepit.RemoteError):
                raise RemoteCellError(exc, cell, pool.name) from None
            if isinstance(exc, KeyboardInterrupt):
                raise CellInterrupted(f"cancelled on worker {wid}") from None
            raise CellFailed(exc) from None
        return None


def _adaptive_frame(pool: snakepit.Pool) -> Any:
    """The pool's ``pool.adapt`` decisions (empty, with the columns, when it never adapted)."""
    import pandas as pd

    from snakepit.adaptive import LOG_COLUMNS

    adaptive = pool.adaptive
    if adaptive is None:
        return pd.DataFrame(columns=list(LOG_COLUMNS))
    return adaptive.log.to_frame()


def _as_frame(obj: Any) -> Any:
    if hasattr(obj, "to_frame"):
        return obj.to_frame()
    import pandas as pd

    return obj if isinstance(obj, pd.DataFrame) else pd.DataFrame(obj)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext snakepit_nb``: register the magics."""
    ipython.register_magics(SnakepitMagics)
