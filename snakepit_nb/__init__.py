"""snakepit_nb: the Jupyter side of snakepit — magics, a live panel, plotly charts.

In a notebook::

    %load_ext snakepit_nb

    %%snakepit_run                      # runs on a worker; prints stream in while it runs
    import time
    print("start"); time.sleep(1); print("end")

    %snakepit_inspect --detailed        # HTML cards with the utilization level colours
    df = %snakepit_inspect --frame workers

    import snakepit_nb
    panel = snakepit_nb.Panel()         # live gauges, worker table, memory chart, controls
    panel                               # ... and panel.close() when done

    from snakepit_nb import charts
    charts.memory_projection(pool, [1, 2, 4, 8, 16, 32])

``snakepit_nb`` imports ``snakepit`` (public API only); ``snakepit`` never imports it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Panel", "charts", "load_ipython_extension", "unload_ipython_extension"]

if TYPE_CHECKING:  # pragma: no cover
    from . import charts
    from .panel import Panel


def load_ipython_extension(ipython: Any) -> None:
    """Called by ``%load_ext snakepit_nb``: registers ``%snakepit_inspect`` and ``%%snakepit_run``."""
    from .magics import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """Called by ``%unload_ext snakepit_nb``: closes every live panel."""
    from .panel import Panel as _Panel

    _Panel.close_all()


def __getattr__(name: str) -> Any:  # lazy: ipywidgets and plotly are heavy
    if name == "Panel":
        from .panel import Panel as _Panel

        return _Panel
    if name == "charts":
        import importlib

        return importlib.import_module(".charts", __name__)
    raise AttributeError(f"module 'snakepit_nb' has no attribute {name!r}")
