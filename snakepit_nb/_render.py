"""Text, HTML and JSON renderings of inspector snapshots (Jinja2 templates, autoescaped)."""
from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Mapping
from typing import Any, Iterable

import jinja2

from ._diag import LEVEL_ICONS, SEVERITY_COLOURS, PoolSnapshot, level_colour

__all__ = ["render_html", "render_json", "render_text", "fmt_duration", "fmt_mb"]


def fmt_mb(value: float | None) -> str:
    """``123.4 MB`` (or an en dash when unknown)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.1f} MB"


def fmt_duration(seconds: float | None) -> str:
    """``42s``, ``3m 05s``, ``2h 01m``."""
    if seconds is None:
        return "–"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {(s % 3600) // 60:02d}m"


def fmt_pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}%"


_STATUS_ICONS = {"available": "✓ Available", "busy": "● Busy", "starting": "… Starting",
                 "recycling": "↻ Recycling", "unhealthy": "✗ Unhealthy", "stopped": "■ Stopped"}

_TEMPLATES = {
    "gauge.html.j2": """\
<div style="display:flex;align-items:center;gap:10px;margin:4px 0">
  <div style="flex:1;min-width:160px;max-width:420px;height:14px;background:#e9ecef;border-radius:7px;overflow:hidden"
       title="{{ pct_text }} of capacity in use">
    <div style="width:{{ width }}%;height:100%;background:{{ colour }};border-radius:7px"></div>
  </div>
  <span style="font-weight:600;color:{{ colour }};min-width:120px">{{ pct_text }} · {{ level }}</span>
</div>""",
    "figures.html.j2": """\
<table style="border-collapse:collapse;margin:4px 0;font-size:13px">
  <tr>{% for label, value in figures %}<th style="text-align:left;padding:2px 14px 2px 0;color:#6c757d;font-weight:500">{{ label }}</th>{% endfor %}</tr>
  <tr>{% for label, value in figures %}<td style="padding:2px 14px 2px 0;font-weight:600;font-variant-numeric:tabular-nums">{{ value }}</td>{% endfor %}</tr>
</table>""",
    "workers.html.j2": """\
<table class="snakepit-workers" style="border-collapse:collapse;font-size:12.5px;margin:4px 0;font-variant-numeric:tabular-nums">
  <thead><tr style="border-bottom:2px solid #dee2e6">
  {% set on_cluster = rows | selectattr("dask_worker") | list | length > 0 %}
  {% set heads = ["worker", "host", "pid", "status"] if on_cluster else ["worker", "pid", "status"] %}
  {% for h in heads + ["load / capacity", "requests", "memory (RSS)", "uptime"] %}
    <th style="text-align:{{ 'left' if loop.index <= heads | length else 'right' }};padding:3px 10px">{{ h }}</th>{% endfor %}
  </tr></thead>
  <tbody>
  {% for w in rows %}
  <tr style="border-bottom:1px solid #f1f3f5">
    <td style="padding:2px 10px;font-family:monospace">{{ w.worker_id }}</td>
    {% if on_cluster %}<td class="snakepit-host" style="padding:2px 10px" title="Dask worker {{ w.dask_worker or '–' }}">{{ w.host }}</td>{% endif %}
    <td style="padding:2px 10px">{{ w.pid }}</td>
    <td style="padding:2px 10px;color:{{ status_colour(w.status) }}">{{ status_text(w.status) }}</td>
    <td style="padding:2px 10px;text-align:right">
      <span style="display:inline-block;width:60px;height:8px;background:#e9ecef;border-radius:4px;vertical-align:middle;margin-right:6px">
        <span style="display:block;width:{{ (100 * w.load / w.capacity) if w.capacity else 0 }}%;height:100%;background:{{ load_colour(w) }};border-radius:4px"></span>
      </span>{{ w.load }} / {{ w.capacity }}</td>
    <td style="padding:2px 10px;text-align:right">{{ "{:,}".format(w.requests) }}</td>
    <td style="padding:2px 10px;text-align:right">{{ fmt_mb(w.memory_mb) }}</td>
    <td style="padding:2px 10px;text-align:right">{{ fmt_duration(w.uptime_s) }}</td>
  </tr>
  {% else %}
  <tr><td colspan="8" style="padding:4px 10px;color:#6c757d">no live workers</td></tr>
  {% endfor %}
  </tbody>
</table>""",
    "recommendations.html.j2": """\
{% if recs %}
<ul style="margin:4px 0;padding-left:18px;font-size:13px">
{% for r in recs %}
  <li><span style="color:{{ severity_colour(r) }};font-weight:600">{{ severity(r) | upper }}</span>
      {{ message(r) }}{% if suggestion(r) %} <span style="color:#6c757d">→ try</span>
      <code style="font-size:12px;background:#f1f3f5;padding:0 4px;border-radius:3px">{{ suggestion(r) }}</code>{% endif %}</li>
{% endfor %}
</ul>
{% else %}
<div style="font-size:13px;color:#2ca02c;margin:4px 0">✓ No recommendations: the pool is operating well.</div>
{% endif %}""",
    "inspect.html.j2": """\
<div class="snakepit-inspect" style="font-family:system-ui,-apple-system,'Segoe UI',sans-serif;line-height:1.35">
{% for s in snaps %}
<div style="border:1px solid #dee2e6;border-left:5px solid {{ s.colour }};border-radius:6px;padding:8px 12px;margin:6px 0;max-width:860px">
  <div style="display:flex;align-items:baseline;gap:10px;flex-wrap:wrap">
    <span style="font-size:15px;font-weight:700">{{ s.name }}</span>
    <span style="color:#6c757d">{{ s.profile }} profile · taken {{ s.when }}</span>
  </div>
  {% include "gauge.html.j2" with context %}
  {% with figures = s.figures %}{% include "figures.html.j2" %}{% endwith %}
  {% if detailed %}
    <div style="margin-top:6px;font-weight:600;font-size:13px">Workers</div>
    {% with rows = s.rows %}{% include "workers.html.j2" %}{% endwith %}
    {% if s.memory_figures %}
    <div style="margin-top:6px;font-weight:600;font-size:13px">Memory (worker processes, RSS)</div>
    {% with figures = s.memory_figures %}{% include "figures.html.j2" %}{% endwith %}
    {% endif %}
  {% endif %}
  {% if show_recs and "recommendations" not in s.errors %}
    <div style="margin-top:6px;font-weight:600;font-size:13px">Recommendations</div>
    {% with recs = s.recs %}{% include "recommendations.html.j2" %}{% endwith %}
  {% endif %}
  {% if s.errors %}
    <div style="font-size:12px;color:#d62728;margin-top:4px">{% for k, v in s.errors.items() %}{{ k }}: {{ v }}<br>{% endfor %}</div>
  {% endif %}
</div>
{% endfor %}
</div>""",
}


def _rec_field(rec: Any, name: str, default: str = "") -> str:
    value = getattr(rec, name, None)
    if value is None and isinstance(rec, dict):
        value = rec.get(name)
    if value is None:
        return default
    return str(getattr(value, "value", value))


def _severity(rec: Any) -> str:
    sev = _rec_field(rec, "severity")
    if not sev:
        text = str(rec)
        sev = text.split(":", 1)[0] if ":" in text[:10] else "info"
    return sev.lower()


def _message(rec: Any) -> str:
    msg = _rec_field(rec, "message")
    return msg or str(rec)


def _py(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _suggestion(rec: Any) -> str:
    value = getattr(rec, "suggestion", None)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_py(v)}" for k, v in value.items())
    return "" if value is None else str(value)


def _status_colour(status: str) -> str:
    return {"available": "#2ca02c", "busy": "#e6a100", "unhealthy": "#d62728",
            "recycling": "#6f42c1"}.get(status, "#6c757d")


def _load_colour(row: dict[str, Any]) -> str:
    # A full process worker (1/1) is normal: colour the slots by status, not by alarm level.
    return "#e6a100" if row["load"] >= row["capacity"] else "#1f77b4"


_env = jinja2.Environment(loader=jinja2.DictLoader(_TEMPLATES), autoescape=True,
                          trim_blocks=True, lstrip_blocks=True)
_env.globals.update(
    fmt_mb=fmt_mb, fmt_duration=fmt_duration, status_colour=_status_colour,
    status_text=lambda s: _STATUS_ICONS.get(s, s), load_colour=_load_colour,
    severity=_severity, message=_message, suggestion=lambda r: _suggestion(r),
    severity_colour=lambda r: SEVERITY_COLOURS.get(_severity(r), "#6c757d"),
)


def template(name: str) -> jinja2.Template:
    """One of the package's Jinja2 templates (autoescaped)."""
    return _env.get_template(name)


def _figures(s: PoolSnapshot) -> list[tuple[str, str]]:
    st = s.statistics
    used, total = s.capacity_used, s.capacity_total
    figures = [
        ("workers", str(st.get("workers", len(s.workers)))),
        ("capacity used", f"{used} / {total}"),
        ("available", str(max(0, total - used))),
        ("queue", f"{st.get('queue_depth', 0)} / {st.get('max_queue_size', '–')}"),
        ("in flight", str(st.get("in_flight", used))),
        ("completed", f"{st.get('completed', 0):,}"),
        ("failed", f"{st.get('failed', 0):,}"),
        ("memory (RSS sum)", fmt_mb(s.total_memory_mb)),
        ("footprint", fmt_mb(getattr(s.memory, "footprint_mb", None))),
    ]
    info = getattr(s.capacity, "thread_info", None)
    if info is not None:
        tpw = info.get("threads_per_worker") if isinstance(info, dict) else getattr(info, "threads_per_worker", None)
        figures.insert(1, ("threads / worker", str(tpw)))
    return figures


def _memory_figures(s: PoolSnapshot) -> list[tuple[str, str]]:
    m = s.memory
    if m is None:
        return []
    return [
        ("total", fmt_mb(getattr(m, "total_memory_mb", None))),
        ("average / worker", fmt_mb(getattr(m, "avg_memory_per_worker_mb", None))),
        ("largest worker", fmt_mb(getattr(m, "max_memory_worker_mb", None))),
        ("smallest worker", fmt_mb(getattr(m, "min_memory_worker_mb", None))),
    ]


def gauge_html(percent: float | None, level: str) -> str:
    """An HTML utilization bar coloured by level."""
    pct = percent or 0.0
    return template("gauge.html.j2").render(
        width=max(0.0, min(100.0, pct)), colour=level_colour(level), pct_text=fmt_pct(percent), level=level)


def workers_html(rows: list[dict[str, Any]]) -> str:
    """The worker table as HTML."""
    return template("workers.html.j2").render(rows=rows)


def figures_html(figures: list[tuple[str, str]]) -> str:
    return template("figures.html.j2").render(figures=figures)


def recommendations_html(recs: list[Any]) -> str:
    return template("recommendations.html.j2").render(recs=recs)


def pool_figures(s: PoolSnapshot) -> list[tuple[str, str]]:
    """The headline figures of a pool, as ``(label, text)`` pairs."""
    return _figures(s)


def render_html(snaps: Iterable[PoolSnapshot], *, detailed: bool = False, recommendations: bool = False) -> str:
    """HTML cards, one per pool: gauge, figures, optionally workers, memory and recommendations."""
    items = []
    for s in snaps:
        level = s.level
        items.append({
            "name": s.name, "profile": s.profile, "colour": level_colour(level), "level": level,
            "when": _dt.datetime.fromtimestamp(s.taken_at).strftime("%H:%M:%S"),
            "figures": _figures(s), "rows": s.worker_rows(), "memory_figures": _memory_figures(s),
            "recs": s.recommendations, "errors": s.errors,
            "width": max(0.0, min(100.0, s.utilization_percent or 0.0)),
            "pct_text": fmt_pct(s.utilization_percent),
        })
    # The gauge template reads width/colour/pct_text/level from the loop variable's context.
    html = []
    tpl = template("inspect.html.j2")
    for item in items:
        html.append(tpl.render(snaps=[item], detailed=detailed, show_recs=recommendations, **{
            k: item[k] for k in ("width", "colour", "pct_text", "level")}))
    return "\n".join(html)


def render_text(snaps: Iterable[PoolSnapshot], *, detailed: bool = False, recommendations: bool = False) -> str:
    """The seed inspector's plain-text layout (badges, statistics, worker details, recommendations)."""
    line = "=" * 80
    out = ["", line, "🔍 SNAKEPIT PROFILE INSPECTOR", line]
    for s in snaps:
        st = s.statistics
        pct = s.utilization_percent
        level = s.level
        out += ["", f"📊 Pool: {s.name}", "-" * 80, "", "📈 Statistics:"]
        out.append(f"  Profile:          {s.profile}")
        out.append(f"  Active Workers:   {st.get('workers', len(s.workers))}")
        out.append(f"  Total Capacity:   {s.capacity_total}")
        out.append(f"  Used Capacity:    {s.capacity_used}")
        out.append(f"  Available:        {max(0, s.capacity_total - s.capacity_used)}")
        out.append(f"  Queue:            {st.get('queue_depth', 0)} / {st.get('max_queue_size', '-')}")
        out.append(f"  Utilization:      {fmt_pct(pct)} {LEVEL_ICONS.get(level, '')} {level}")
        if s.memory is not None:
            out += ["", "💾 Memory Usage:"]
            for label, value in _memory_figures(s):
                out.append(f"  {label.capitalize() + ':':<18}{value}")
        if detailed:
            rows = s.worker_rows()
            on_cluster = any(r.get("dask_worker") for r in rows)
            host_head = f"{'Host':<16}" if on_cluster else ""
            out += ["", "👷 Worker Details:", "-" * 80,
                    f"{'Worker ID':<22}{host_head}{'PID':>8}  {'Status':<13}{'Load/Cap':>9}{'Requests':>10}"
                    f"{'Memory':>12}{'Uptime':>10}",
                    "-" * 80]
            for r in rows:
                host = f"{str(r.get('host') or '')[:15]:<16}" if on_cluster else ""
                out.append(
                    f"{r['worker_id'][:21]:<22}{host}{r['pid']:>8}  {_STATUS_ICONS.get(r['status'], r['status']):<13}"
                    f"{str(r['load']) + '/' + str(r['capacity']):>9}{r['requests']:>10}{fmt_mb(r['memory_mb']):>12}"
                    f"{fmt_duration(r['uptime_s']):>10}")
        if recommendations and "recommendations" not in s.errors:
            if s.recommendations:
                out += ["", "💡 Recommendations:"] + [f"  • {r}" for r in s.recommendations]
            else:
                out += ["", "✅ No recommendations - pool is operating optimally"]
        for key, err in s.errors.items():
            out.append(f"  ⚠ {key}: {err}")
    out += ["", line, "✅ INSPECTION COMPLETE", line]
    return "\n".join(out)


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        if isinstance(value, dict):
            return {str(k): _jsonable(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [_jsonable(v) for v in value]
        return str(value)


def render_json(snaps: Iterable[PoolSnapshot], *, detailed: bool = False, recommendations: bool = False) -> str:
    """Pool stats keyed by pool name (``.default.utilization_percent`` works, as in the CLI)."""
    out: dict[str, Any] = {}
    for s in snaps:
        entry = s.pool_stats.to_dict() if s.pool_stats is not None else {
            "pool_name": s.name, "profile": s.profile, "utilization_percent": s.utilization_percent}
        entry = dict(entry)
        if detailed:
            if s.capacity is not None:
                entry["capacity"] = s.capacity.to_dict()
            if s.memory is not None:
                entry["memory"] = s.memory.to_dict()
        if recommendations:
            entry["recommendations"] = [
                r.to_dict() if hasattr(r, "to_dict") else str(r) for r in s.recommendations]
        if s.errors:
            entry["errors"] = dict(s.errors)
        out[s.name] = _jsonable(entry)
    return json.dumps(out, indent=2, default=str)
