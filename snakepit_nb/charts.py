"""Plotly figures for capacity planning, drawn from :mod:`snakepit.diagnostics` frames.

Every function returns a ``plotly.graph_objects.Figure`` (show it, or wrap it in a
``go.FigureWidget``). The numbers come from the inspector; this module only draws them.

Example::

    import snakepit
    from snakepit_nb import charts

    pool = snakepit.start_pool("default", pool_size=4)
    charts.memory_projection(pool, [1, 2, 4, 8, 16, 32, 64, 128, 200])
    charts.process_vs_thread(pool, threads_per_worker=8)
    charts.utilization_timeline(pool)
"""
from __future__ import annotations

from typing import Any, Iterable

import snakepit

from . import _diag

__all__ = ["memory_projection", "process_vs_thread", "utilization_timeline"]

_BLUE, _GREY, _ORANGE, _RED = "#1f77b4", "#9a9a9a", "#ff7f0e", "#d62728"
_LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=30, t=60, b=50),
               legend=dict(orientation="h", y=-0.2), font=dict(size=12))


def _go():  # noqa: ANN202 - lazy: plotly is heavy
    import plotly.graph_objects as go

    return go


def _pool(pool: Any) -> snakepit.Pool:
    return snakepit.get_pool(pool) if isinstance(pool, str) else pool


def _frame(obj: Any) -> Any:
    import pandas as pd

    if obj is None:
        return None
    if isinstance(obj, pd.DataFrame):
        return obj
    if hasattr(obj, "to_frame"):
        return obj.to_frame()
    return pd.DataFrame(obj)


def memory_projection(pool: Any = None, worker_counts: Iterable[int] | None = None, *, frame: Any = None,
                      measured: Any = None, memory_limit_mb: float | None = None,
                      title: str | None = None) -> Any:
    """Projected total memory for N workers, with the measured points and the naive estimate.

    Args:
        pool: a pool (or its name) to measure; not needed when ``frame`` is given.
        worker_counts: the N to project for (default 1 … 200).
        frame: a :func:`snakepit.diagnostics.project_memory` DataFrame (columns ``workers``,
            ``projected_total_mb``, ``naive_rss_total_mb``, ``measured_total_mb``, …).
        measured: extra measured points: a DataFrame or records with ``workers`` and
            ``total_mb`` (e.g. pools of 1, 2, 4 workers measured in a notebook).
        memory_limit_mb: draw this limit (e.g. the machine's RAM) as a horizontal line.
        title: the figure title.

    Returns:
        a plotly ``Figure``: the projection (shared memory counted once + N × private memory
        per worker), the seed's naive ``N × average RSS`` dashed, measured points as markers.

    Example::

        fig = charts.memory_projection(pool, [1, 2, 4, 8, 16, 50, 100, 200],
                                       memory_limit_mb=psutil.virtual_memory().total / 2**20)
    """
    go = _go()
    if frame is None:
        if pool is None:
            raise ValueError("give a pool (to measure) or a project_memory frame")
        counts = list(worker_counts) if worker_counts is not None else [1, 2, 4, 8, 16, 32, 64, 100, 150, 200]
        frame = _diag.diag("project_memory")(_pool(pool), counts)
    df = _frame(frame).sort_values("workers")
    fig = go.Figure()
    if "naive_rss_total_mb" in df:
        fig.add_scatter(x=df["workers"], y=df["naive_rss_total_mb"], mode="lines", name="naive: N × average RSS",
                        line=dict(color=_GREY, dash="dash", width=2),
                        hovertemplate="%{x} workers: %{y:,.0f} MB (naive)<extra></extra>")
    fig.add_scatter(x=df["workers"], y=df["projected_total_mb"], mode="lines+markers",
                    name="projected: shared once + N × private", line=dict(color=_BLUE, width=3),
                    marker=dict(size=6),
                    hovertemplate="%{x} workers: %{y:,.0f} MB projected<extra></extra>")
    points: dict[float, float] = {}
    if "measured_total_mb" in df:
        m = df.dropna(subset=["measured_total_mb"])
        points.update(zip(m["workers"], m["measured_total_mb"]))
    if measured is not None:
        mf = _frame(measured)
        ycol = "total_mb" if "total_mb" in mf else ("measured_total_mb" if "measured_total_mb" in mf
                                                   else "footprint_mb")
        points.update(zip(mf["workers"], mf[ycol]))  # one point per pool size; explicit ones win
    points_x, points_y = list(points), list(points.values())
    if points_x:
        fig.add_scatter(x=points_x, y=points_y, mode="markers", name="measured",
                        marker=dict(color=_ORANGE, size=12, symbol="diamond", line=dict(color="white", width=1)),
                        hovertemplate="%{x} workers: %{y:,.0f} MB measured<extra></extra>")
    if memory_limit_mb:
        fig.add_hline(y=memory_limit_mb, line=dict(color=_RED, dash="dot"),
                      annotation_text=f"limit {memory_limit_mb:,.0f} MB", annotation_position="top left")
    last = df.iloc[-1]
    note = f"{int(last['workers'])} workers: {last['projected_total_mb']:,.0f} MB"
    if "naive_rss_total_mb" in df:
        note += f"<br>(naive estimate: {last['naive_rss_total_mb']:,.0f} MB)"
    fig.add_annotation(x=last["workers"], y=last["projected_total_mb"], text=note, showarrow=True,
                       arrowhead=2, ax=-80, ay=-40, bgcolor="rgba(255,255,255,0.85)")
    basis = str(df["basis"].iloc[0]) if "basis" in df and len(df) else ""
    sub = {"uss": "private = measured USS per worker; shared = RSS − USS, counted once",
           "rss": "the OS gives no USS here: private = RSS, nothing shared"}.get(basis, "")
    fig.update_layout(
        title=dict(text=(title or "Memory for N workers")
                   + (f"<br><sup>{sub}</sup>" if sub else "")),
        xaxis_title="worker processes", yaxis_title="total memory (MB)", **_LAYOUT)
    fig.update_yaxes(rangemode="tozero")
    fig.update_xaxes(rangemode="tozero")
    return fig


def process_vs_thread(pool: Any = None, *, comparison: Any = None, throughput: Any = None,
                      capacity: int | None = None, threads_per_worker: int = 8,
                      title: str | None = None) -> Any:
    """Process profile vs thread profile for the same capacity: memory, and throughput if measured.

    Args:
        pool: a pool (or name) whose measured memory feeds
            ``snakepit.diagnostics.compare_profiles`` (not needed with ``comparison``).
        comparison: a ``compare_profiles`` DataFrame (``profile``, ``workers``,
            ``threads_per_worker``, ``capacity``, ``projected_total_mb``, ``saving_percent``).
        throughput: measured throughput, a DataFrame or records with ``profile``,
            ``workload`` and ``tasks_per_s`` (e.g. a GIL-bound and a GIL-releasing workload).
        capacity / threads_per_worker: passed to ``compare_profiles``.

    Example::

        charts.process_vs_thread(comparison=cmp_df, throughput=[
            {"profile": "process", "workload": "GIL-bound", "tasks_per_s": 7.9},
            {"profile": "thread", "workload": "GIL-bound", "tasks_per_s": 4.1}])
    """
    go = _go()
    from plotly.subplots import make_subplots

    if comparison is None and pool is not None:
        kwargs: dict[str, Any] = {"threads_per_worker": threads_per_worker}
        if capacity is not None:
            kwargs["capacity"] = capacity
        comparison = _diag.diag("compare_profiles")(_pool(pool), **kwargs)
    cmp_df = _frame(comparison)
    tp_df = _frame(throughput)
    panels = [p for p in (cmp_df, tp_df) if p is not None]
    if not panels:
        raise ValueError("give a pool, a comparison frame or throughput measurements")
    titles = []
    if cmp_df is not None:
        cap = int(cmp_df["capacity"].iloc[0]) if "capacity" in cmp_df else None
        titles.append(f"Memory for the same capacity ({cap} concurrent requests)" if cap else "Memory")
    if tp_df is not None:
        titles.append("Measured throughput (tasks / s)")
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=titles, horizontal_spacing=0.12)
    colours = {"process": _BLUE, "thread": _ORANGE}
    col = 1
    if cmp_df is not None:
        labels = [f"{r.profile}<br>{int(r.workers)} × {int(r.threads_per_worker)} "
                  f"{'thread' if r.profile == 'thread' else 'proc'}" for r in cmp_df.itertuples()]
        text = []
        for r in cmp_df.itertuples():
            t = f"{r.projected_total_mb:,.0f} MB"
            saving = getattr(r, "saving_percent", None)
            if r.profile == "thread" and saving:
                t += f"<br>−{saving:.0f}%"
            text.append(t)
        fig.add_bar(x=labels, y=cmp_df["projected_total_mb"], text=text, textposition="outside",
                    marker_color=[colours.get(p, _GREY) for p in cmp_df["profile"]], name="projected memory",
                    showlegend=False, row=1, col=col)
        fig.update_yaxes(title_text="MB", rangemode="tozero", row=1, col=col)
        col += 1
    if tp_df is not None:
        for profile, group in tp_df.groupby("profile", sort=False):
            fig.add_bar(x=group["workload"], y=group["tasks_per_s"], name=str(profile),
                        marker_color=colours.get(str(profile), _GREY),
                        text=[f"{v:,.1f}" for v in group["tasks_per_s"]], textposition="outside",
                        row=1, col=col)
        fig.update_layout(barmode="group")
        fig.update_yaxes(title_text="tasks / s", rangemode="tozero", row=1, col=col)
    fig.update_layout(title=title or "Process vs thread profile", **_LAYOUT)
    return fig


def utilization_timeline(source: Any, *, window: float | None = None, title: str | None = None) -> Any:
    """Utilization (coloured by level), queue depth and in-flight requests over time.

    Args:
        source: a pool or its name (its ``get_history``), a ``History`` report, or a DataFrame
            with ``time``, ``utilization_percent``, ``queue_depth`` and optionally ``in_flight``.
        window: keep only the last ``window`` seconds.

    Example::

        charts.utilization_timeline("default", window=120)
    """
    go = _go()
    from plotly.subplots import make_subplots

    import pandas as pd

    if isinstance(source, (str, snakepit.Pool)):
        source = _diag.diag("get_history")(_pool(source))
    df = _frame(source).copy()
    if len(df) and not pd.api.types.is_datetime64_any_dtype(df["time"]):
        df["time"] = pd.to_datetime(df["time"], unit="s", utc=True)
    if window is not None and len(df):
        df = df[df["time"] >= df["time"].max() - pd.Timedelta(seconds=window)]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    util = df["utilization_percent"].fillna(0.0) if len(df) else []
    colours = [_diag.level_colour(_diag.level_of(v)) for v in util]
    fig.add_bar(x=df["time"], y=df["queue_depth"], name="queue depth", marker_color="rgba(214,39,40,0.35)",
                secondary_y=True)
    if "in_flight" in df:
        fig.add_scatter(x=df["time"], y=df["in_flight"], name="in flight", mode="lines",
                        line=dict(color=_GREY, width=1, shape="hv"), secondary_y=True)
    fig.add_scatter(x=df["time"], y=util, name="utilization %", mode="lines+markers",
                    line=dict(color="#444", width=1.5), marker=dict(color=colours, size=6),
                    hovertemplate="%{x|%H:%M:%S}: %{y:.1f}%<extra></extra>", secondary_y=False)
    fig.update_yaxes(title_text="utilization (%)", range=[0, 105], secondary_y=False)
    fig.update_yaxes(title_text="requests", rangemode="tozero", showgrid=False, secondary_y=True)
    fig.update_layout(title=title or "Utilization and queue over time "
                      "<br><sup>marker colour = utilization level (LOW / GOOD / HIGH / CRITICAL)</sup>",
                      **_LAYOUT)
    return fig

