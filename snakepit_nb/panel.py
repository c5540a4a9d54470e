"""The live panel: per pool a utilization gauge, figures, worker table, memory and load charts,
recommendations, and controls (pause/resume, refresh interval, recycle a worker).

Example::

    import snakepit, snakepit_nb
    pool = snakepit.start_pool("default", pool_size=4)
    panel = snakepit_nb.Panel()          # every running pool; refreshes every second
    panel                                # show it (or: %snakepit_inspect --live)
    ...
    panel.close()                        # stops its thread; also done at kernel shutdown

One background thread (named ``snakepit-panel-<n>``) refreshes the widgets; it never prints,
so it cannot steal another cell's output: problems are shown in the panel's status line.
Each refresh sends one batched update per chart. Static viewers (nbconvert, GitHub) get an
HTML snapshot from ``_repr_mimebundle_``.
"""
from __future__ import annotations

import atexit
import collections
import datetime as _dt
import itertools
import math
import threading
import time
import weakref
from typing import Any

import snakepit
from snakepit.signals import start_thread

from . import _diag, _render

__all__ = ["Panel"]

_counter = itertools.count(1)
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
            "#7f7f7f", "#d62728")


class _Series:
    """Bounded time series the charts draw (seeded from the pool's history when it has one)."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.times: collections.deque[float] = collections.deque()
        self.util: collections.deque[float] = collections.deque()
        self.queue: collections.deque[int] = collections.deque()
        self.memory: dict[str, collections.deque[tuple[float, float]]] = {}

    def add(self, t: float, util: float, queue: int, memory: dict[str, float]) -> None:
        self.times.append(t)
        self.util.append(util)
        self.queue.append(queue)
        for wid, mb in memory.items():
            if mb is not None:
                self.memory.setdefault(wid, collections.deque()).append((t, mb))
        self.trim(t)

    def trim(self, now: float) -> None:
        cutoff = now - self.window
        while self.times and self.times[0] < cutoff:
            self.times.popleft()
            self.util.popleft()
            self.queue.popleft()
        for wid in list(self.memory):
            points = self.memory[wid]
            while points and points[0][0] < cutoff:
                points.popleft()
            if not points:
                del self.memory[wid]

    def seed_from_history(self, pool: snakepit.Pool) -> None:
        try:
            history = _diag.diag("get_history")(pool)
        except Exception:  # noqa: BLE001 - the chart simply starts empty
            return
        samples = getattr(history, "samples", None)
        if not samples:
            return
        try:
            rows = history.worker_rows()
        except Exception:  # noqa: BLE001
            rows = []
        now = time.time()
        for s in samples:
            t = float(s.get("time", 0))
            if t < now - self.window:
                continue
            self.times.append(t)
            self.util.append(float(s.get("utilization_percent") or 0.0))
            self.queue.append(int(s.get("queue_depth") or 0))
        for r in rows:
            t = float(r["time"])
            if t >= now - self.window and r.get("memory_mb") is not None:
                self.memory.setdefault(r["worker_id"], collections.deque()).append((t, float(r["memory_mb"])))


def _activity_html(pool_name: str, workers: int) -> str:
    """One line on sizing (target size, adaptive bounds and its last decision) and one per
    running map (items done / total, failures); empty when there is nothing to say."""
    from snakepit import progress

    try:
        pool = snakepit.get_pool(pool_name)
    except snakepit.PoolNotFoundError:
        return ""
    parts = []
    adaptive, target = pool.adaptive, pool.target_size
    if adaptive is not None or target != workers:
        text = f"<b>size</b> {workers} workers, target {target}"
        if adaptive is not None:
            text += f" · adaptive {adaptive.minimum}–{adaptive.maximum}"
            rows = adaptive.log.to_dict()
            if rows:
                last = rows[-1]
                when = time.strftime("%H:%M:%S", time.localtime(last["time"]))
                text += f" · last: {_esc(str(last['reason']))} {last['from_size']}→{last['to_size']} at {when}"
        parts.append(text)
    for m in progress.running_maps(pool_name):
        pct = 100.0 * m.done / m.total if m.total else 100.0
        fail = f", <span style='color:#d62728'>{m.failures} failed</span>" if m.failures else ""
        parts.append(
            f"<span class='snakepit-map'><b>map #{m.id}</b> "
            f"<span style='display:inline-block;width:120px;height:8px;background:#e9ecef;border-radius:4px;"
            f"vertical-align:middle'><span style='display:block;width:{pct:.0f}%;height:100%;background:#1f77b4;"
            f"border-radius:4px'></span></span> {m.done}/{m.total} items ({pct:.0f}%){fail}</span>")
    if not parts:
        return ""
    return ('<div class="snakepit-activity" style="font-size:12.5px;margin:4px 0;font-family:system-ui,sans-serif">'
            + "<br>".join(parts) + "</div>")


class _PoolSection:
    """The widgets of one pool inside the panel."""

    def __init__(self, panel: "Panel", pool: snakepit.Pool) -> None:
        import ipywidgets as W
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        self.name = pool.name
        self.series = _Series(panel.window)
        self.series.seed_from_history(pool)
        self.title = W.HTML(layout=W.Layout(margin="0"))
        self.gauge = W.FloatProgress(value=0.0, min=0.0, max=100.0, description="utilization",
                                     style={"bar_color": _diag.LEVEL_COLOURS["LOW"], "description_width": "initial"},
                                     layout=W.Layout(width="360px"))
        self.gauge_label = W.HTML(layout=W.Layout(margin="0 0 0 8px"))
        self.figures = W.HTML()
        self.table = W.HTML()
        self.activity = W.HTML()  # sizing (target, adaptive) and the running maps' progress
        self.recommendations = W.HTML()
        fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.1,
                            specs=[[{}, {"secondary_y": True}]],
                            subplot_titles=("Memory per worker (RSS, MB)", "Utilization % and queue depth"))
        self.figure = go.FigureWidget(fig)
        self.figure.update_layout(
            width=820, height=290, margin=dict(l=55, r=55, t=40, b=40), template="plotly_white",
            showlegend=True, legend=dict(orientation="h", x=0, y=-0.22, font=dict(size=11)),
            uirevision="keep", font=dict(size=11),
        )
        self.figure.update_annotations(font_size=13)
        self.figure.add_scatter(name="utilization %", mode="lines+markers", x=[], y=[], showlegend=False,
                                line=dict(color="#555", width=1.5), marker=dict(size=6),
                                hovertemplate="%{x|%H:%M:%S}: %{y:.0f}% busy<extra></extra>",
                                row=1, col=2, secondary_y=False)
        self.figure.add_bar(name="queue depth", x=[], y=[], showlegend=False,
                            marker=dict(color="rgba(214,39,40,0.45)"),
                            hovertemplate="%{x|%H:%M:%S}: %{y} queued<extra></extra>",
                            row=1, col=2, secondary_y=True)
        self.figure.update_yaxes(title_text="MB", row=1, col=1)
        self.figure.update_yaxes(title_text="% of slots busy", range=[0, 105], row=1, col=2, secondary_y=False)
        self.figure.update_yaxes(title_text="queued requests (bars)", range=[0, 1], tickformat="d",
                                 row=1, col=2, secondary_y=True, showgrid=False,
                                 title_font=dict(color="#d62728"), tickfont=dict(color="#d62728"))
        self._memory_traces: dict[str, int] = {}
        head = W.HBox([self.gauge, self.gauge_label], layout=W.Layout(align_items="center"))
        self.box = W.VBox(
            [self.title, head, self.figures, self.table, self.activity, self.figure, self.recommendations],
            layout=W.Layout(border="1px solid #dee2e6", padding="6px 12px", margin="6px 0"),
        )
        self.widgets = [self.title, self.gauge, self.gauge_label, self.figures, self.table, self.activity,
                        self.recommendations, self.figure, head, self.box]

    def update(self, snap: _diag.PoolSnapshot) -> None:
        pct = snap.utilization_percent or 0.0
        level = snap.level
        colour = _diag.level_colour(level)
        st = snap.statistics
        self.series.add(snap.taken_at, pct, int(st.get("queue_depth", 0) or 0),
                        {r["worker_id"]: r["memory_mb"] for r in snap.worker_rows()})
        self.title.value = (
            f'<div style="display:flex;gap:10px;align-items:baseline;font-family:system-ui,sans-serif">'
            f'<span style="font-size:15px;font-weight:700">{_esc(snap.name)}</span>'
            f'<span style="color:#6c757d">{_esc(snap.profile)} profile</span>'
            f'<span style="background:{colour};color:white;border-radius:3px;padding:0 6px;font-size:12px">'
            f'{_esc(level)}</span></div>')
        self.gauge.value = max(0.0, min(100.0, pct))
        self.gauge.style.bar_color = colour
        self.gauge_label.value = (f'<span style="font-weight:600;color:{colour}">{pct:.1f}% · {_esc(level)}</span>'
                                  f'<span style="color:#6c757d"> ({snap.capacity_used} of {snap.capacity_total} '
                                  f'slots busy)</span>')
        self.figures.value = _render.figures_html(_render.pool_figures(snap))
        self.table.value = _render.workers_html(snap.worker_rows())
        self.activity.value = _activity_html(snap.name, len(snap.workers))
        recs = _render.recommendations_html(snap.recommendations)
        if snap.errors:
            recs += "".join(f'<div style="color:#d62728;font-size:12px">{_esc(k)}: {_esc(v)}</div>'
                            for k, v in snap.errors.items())
        self.recommendations.value = recs
        self._update_figure()

    def _update_figure(self) -> None:
        s = self.series
        new = [wid for wid in sorted(s.memory) if wid not in self._memory_traces]
        if new:  # rare: a worker started or was replaced
            import plotly.graph_objects as go

            start = len(self.figure.data)
            self.figure.add_traces(
                [go.Scatter(name=wid, mode="lines", x=[], y=[],
                            hovertemplate=wid + " %{x|%H:%M:%S}: %{y:.1f} MB<extra></extra>",
                            line=dict(width=2, color=_PALETTE[(start + i) % len(_PALETTE)]))
                 for i, wid in enumerate(new)],
                rows=[1] * len(new), cols=[1] * len(new))
            for i, wid in enumerate(new):
                self._memory_traces[wid] = start + i
        times = [_dt.datetime.fromtimestamp(t) for t in s.times]
        colours = [_diag.level_colour(_diag.level_of(u)) for u in s.util]
        mbs = [mb for points in s.memory.values() for _, mb in points]
        if mbs:  # zoom on the workers' memory, but never so close that noise looks like a leak
            lo, hi = min(mbs), max(mbs)
            pad = max(5.0, 0.15 * (hi - lo))
            memory_range = [max(0.0, lo - pad), hi + pad]
        else:
            memory_range = [0.0, 100.0]
        queue_max = max([1, *s.queue])
        queue_tick = max(1, math.ceil(queue_max / 4))
        with self.figure.batch_update():  # one message per refresh
            util, queue = self.figure.data[0], self.figure.data[1]
            util.x, util.y = times, list(s.util)
            util.marker.color = colours
            queue.x, queue.y = times, list(s.queue)
            for wid, idx in self._memory_traces.items():
                trace = self.figure.data[idx]
                points = s.memory.get(wid)
                if points:
                    trace.x = [_dt.datetime.fromtimestamp(t) for t, _ in points]
                    trace.y = [mb for _, mb in points]
                    trace.visible = True
                else:
                    trace.x, trace.y = [], []
                    trace.visible = "legendonly"
            self.figure.layout.yaxis.range = memory_range
            self.figure.layout.yaxis3.range = [0, queue_max * 1.15]
            self.figure.layout.yaxis3.dtick = queue_tick

    def close(self) -> None:
        for w in self.widgets:
            try:
                w.close()
            except Exception:  # noqa: BLE001
                pass


def _esc(text: Any) -> str:
    import html

    return html.escape(str(text))


class Panel:
    """A live ipywidgets panel of snakepit pools.

    Args:
        pools: pool names or :class:`snakepit.Pool` objects to show (a single one is fine);
            ``None`` shows every running pool, including pools started later.
        interval: seconds between refreshes (changeable in the panel).
        window: seconds of history the charts keep.
        autostart: start the refresh thread now (``False``: call :meth:`start` or
            :meth:`refresh` yourself).

    Example::

        panel = snakepit_nb.Panel(["default"], interval=0.5)
        panel.refresh()                     # one synchronous refresh
        panel.gauge("default").value        # the utilization shown, in percent
        panel.close()
    """

    _instances: "weakref.WeakSet[Panel]" = weakref.WeakSet()

    def __init__(self, pools: Any = None, interval: float = 1.0, *, window: float = 300.0,
                 autostart: bool = True) -> None:
        import ipywidgets as W

        if interval <= 0:
            raise ValueError("interval must be a positive number of seconds")
        if isinstance(pools, (str, snakepit.Pool)):
            pools = [pools]
        self._pool_spec: list[Any] | None = list(pools) if pools is not None else None
        self.interval = float(interval)
        self.window = float(window)
        self.refreshes = 0
        self.last_refresh: float | None = None
        self.last_error: str | None = None
        self.closed = False
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._paused = False
        self._sections: dict[str, _PoolSection] = {}
        self._id = next(_counter)
        self._thread: threading.Thread | None = None

        self._title = W.HTML(
            '<div style="font-family:system-ui,sans-serif;font-size:16px;font-weight:700">'
            '<span style="color:#2ca02c">&#9679;</span> snakepit '
            '<span style="font-weight:400;color:#6c757d">live pools</span></div>')
        self._pause = W.ToggleButton(value=False, description="Pause", icon="pause", tooltip="pause / resume refreshing",
                                     layout=W.Layout(width="100px"))
        self._interval = W.BoundedFloatText(value=self.interval, min=0.2, max=60.0, step=0.5,
                                            description="every (s)", style={"description_width": "initial"},
                                            layout=W.Layout(width="140px"))
        self._worker = W.Dropdown(options=[], description="worker", style={"description_width": "initial"},
                                  layout=W.Layout(width="260px"))
        self._recycle = W.Button(description="Recycle", icon="refresh", button_style="warning",
                                 tooltip="start a replacement, then retire the selected worker",
                                 layout=W.Layout(width="100px"))
        self._status = W.HTML(layout=W.Layout(margin="0 0 0 10px"))
        self._pools_box = W.VBox()
        self._empty = W.HTML(
            '<div style="color:#6c757d;font-family:system-ui,sans-serif;padding:6px 0">No snakepit pool is running. '
            'Start one with <code>snakepit.start_pool("default", pool_size=4)</code> '
            '(or run a <code>%%snakepit_run</code> cell).</div>')
        controls = W.HBox([self._pause, self._interval, self._worker, self._recycle, self._status],
                          layout=W.Layout(align_items="center", flex_flow="row wrap"))
        self.widget = W.VBox([self._title, controls, self._pools_box],
                             layout=W.Layout(padding="4px", max_width="1000px"))
        self._own = [self._title, self._pause, self._interval, self._worker, self._recycle, self._status,
                     self._pools_box, self._empty, controls, self.widget]
        self._pause.observe(self._on_pause, names="value")
        self._interval.observe(self._on_interval, names="value")
        self._recycle.on_click(self._on_recycle)
        Panel._instances.add(self)
        self.refresh()
        if autostart:
            self.start()

    # ------------------------------------------------------------------ public
    def start(self) -> None:
        """Start the refresh thread (idempotent)."""
        with self._lock:
            if self.closed:
                raise RuntimeError("the panel is closed")
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"snakepit-panel-{self._id}", daemon=True)
            start_thread(self._thread)

    def pause(self) -> None:
        """Stop refreshing (the thread stays, idle) until :meth:`resume`."""
        self._pause.value = True

    def resume(self) -> None:
        """Refresh again."""
        self._pause.value = False

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def thread(self) -> threading.Thread | None:
        """The refresh thread (None before :meth:`start` and after :meth:`close`)."""
        return self._thread

    def set_interval(self, seconds: float) -> None:
        """Change the refresh interval."""
        self._interval.value = float(seconds)

    def pools(self) -> list[snakepit.Pool]:
        """The running pools this panel shows right now."""
        if self._pool_spec is None:
            return _diag.resolve_pools()
        objs = [p for p in self._pool_spec if isinstance(p, snakepit.Pool)]
        names = [p for p in self._pool_spec if isinstance(p, str)]
        return _diag.resolve_pools(pools=objs) + (_diag.resolve_pools(names=names) if names else [])

    def gauge(self, pool: str = "default") -> Any:
        """The utilization gauge (an ``ipywidgets.FloatProgress``) of a pool."""
        return self._sections[pool].gauge

    def worker_table(self, pool: str = "default") -> Any:
        """The worker table (an ``ipywidgets.HTML``) of a pool."""
        return self._sections[pool].table

    def activity(self, pool: str = "default") -> Any:
        """The sizing and running-maps line (an ``ipywidgets.HTML``) of a pool."""
        return self._sections[pool].activity

    def figure(self, pool: str = "default") -> Any:
        """The memory/utilization chart (a plotly ``FigureWidget``) of a pool."""
        return self._sections[pool].figure

    def refresh(self) -> None:
        """Refresh every widget once, now (what the thread does every ``interval`` seconds)."""
        with self._lock:
            if self.closed:
                return
            started = time.monotonic()
            try:
                self._refresh()
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - shown in the panel, never printed
                self.last_error = f"{type(exc).__name__}: {exc}"
            self.refreshes += 1
            self.last_refresh = time.time()
            took = (time.monotonic() - started) * 1000
            when = _dt.datetime.fromtimestamp(self.last_refresh).strftime("%H:%M:%S")
            state = "paused" if self._paused else f"every {self.interval:g}s"
            text = f"updated {when} · {state} · {took:.0f} ms"
            colour = "#6c757d"
            if self.last_error:
                text, colour = f"refresh failed: {_esc(self.last_error)}", "#d62728"
            self._status.value = f'<span style="font-size:12px;color:{colour}">{text}</span>'

    def close(self) -> None:
        """Stop the refresh thread and close the widgets. Idempotent."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._stop.set()
            self._wake.set()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10.0)
        self._thread = None
        for section in self._sections.values():
            section.close()
        for w in self._own:
            try:
                w.close()
            except Exception:  # noqa: BLE001
                pass
        Panel._instances.discard(self)

    @classmethod
    def close_all(cls) -> None:
        """Close every open panel (registered at interpreter exit, i.e. kernel shutdown)."""
        for panel in list(cls._instances):
            panel.close()

    def __enter__(self) -> "Panel":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ display
    def __repr__(self) -> str:
        try:
            names = ", ".join(p.name for p in self.pools()) or "no pools"
        except Exception:  # noqa: BLE001 - a repr never raises
            names = "?"
        state = "closed" if self.closed else ("paused" if self._paused else f"every {self.interval:g}s")
        return f"<snakepit_nb.Panel [{names}] {state}>"

    def snapshot_html(self) -> str:
        """A static HTML snapshot (what nbconvert and GitHub show)."""
        try:
            pools = self.pools()
            if not pools:
                return self._empty.value
            snaps = [_diag.snapshot(p) for p in pools]
            return ('<div style="font-family:system-ui,sans-serif;font-weight:700">🐍 snakepit — snapshot</div>'
                    + _render.render_html(snaps, detailed=True, recommendations=True))
        except Exception as exc:  # noqa: BLE001 - a repr never raises
            return f"<pre>snakepit panel: {_esc(exc)}</pre>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None, **kwargs: Any) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if not self.closed:
            try:
                data.update(self.widget._repr_mimebundle_(include=include, exclude=exclude, **kwargs) or {})
            except Exception:  # noqa: BLE001
                pass
        data["text/plain"] = repr(self)
        data["text/html"] = self.snapshot_html()
        return data

    # ------------------------------------------------------------------ internals
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            if not self._paused:
                self.refresh()

    def _memory_max_age(self, pool: Any) -> float:
        """How old memory figures may be: the workers' heartbeats bring them (one interval,
        plus the lifecycle loop's second), so asking fresher would measure live each refresh."""
        heartbeat = getattr(getattr(pool, "config", None), "heartbeat_interval", None) or 0.0
        return max(2.0, 2 * self.interval, heartbeat + 1.5)

    def _refresh(self) -> None:
        pools = self.pools()
        snaps = [_diag.snapshot(p, capacity=False, memory_max_age_s=self._memory_max_age(p)) for p in pools]
        names = [p.name for p in pools]
        for pool in pools:
            if pool.name not in self._sections:
                self._sections[pool.name] = _PoolSection(self, pool)
        for name in list(self._sections):
            if name not in names:
                self._sections.pop(name).close()
        for snap in snaps:
            self._sections[snap.name].update(snap)
        children = tuple(self._sections[n].box for n in names) if names else (self._empty,)
        if tuple(self._pools_box.children) != children:
            self._pools_box.children = children
        options = [(f"{s.name} / {r['worker_id']} (pid {r['pid']})", (s.name, r["worker_id"]))
                   for s in snaps for r in s.worker_rows() if r["status"] in ("available", "busy")]
        if list(self._worker.options) != options:
            current = self._worker.value
            self._worker.options = options
            values = [v for _, v in options]
            if current in values:
                self._worker.value = current
            elif values:
                self._worker.value = values[0]

    def _on_pause(self, change: dict[str, Any]) -> None:
        self._paused = bool(change["new"])
        self._pause.description = "Resume" if self._paused else "Pause"
        self._pause.icon = "play" if self._paused else "pause"
        self._wake.set()
        if self._paused:
            self._status.value = '<span style="font-size:12px;color:#6c757d">paused</span>'

    def _on_interval(self, change: dict[str, Any]) -> None:
        try:
            value = float(change["new"])
        except (TypeError, ValueError):
            return
        if value > 0:
            self.interval = value
            self._wake.set()

    def _on_recycle(self, _button: Any = None) -> None:
        choice = self._worker.value
        if not choice:
            self._status.value = '<span style="font-size:12px;color:#6c757d">choose a worker first</span>'
            return
        self._recycle_worker(*choice)

    def recycle(self, worker_id: str, pool: str = "default") -> None:
        """Recycle a worker, as the panel's Recycle button does (the outcome shows in the status line)."""
        self._recycle_worker(pool, worker_id)

    def _recycle_worker(self, pool_name: str, worker_id: str) -> None:
        try:
            snakepit.get_pool(pool_name).recycle_worker(worker_id)
            msg, colour = f"recycling {worker_id}: a replacement is starting", "#6f42c1"
        except Exception as exc:  # noqa: BLE001 - shown in the panel
            msg, colour = f"cannot recycle {worker_id}: {exc}", "#d62728"
        self._status.value = f'<span style="font-size:12px;color:{colour}">{_esc(msg)}</span>'
        self._wake.set()


atexit.register(Panel.close_all)
