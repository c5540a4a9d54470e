"""The ``snakepit`` command line: inspect live pools from a terminal, measure, demo.

Commands (``snakepit COMMAND --help`` for each)::

    snakepit profile-inspector [--pool P] [--detailed] [--format text|json]
                               [--recommendations] [--target PID|FILE]
    snakepit pools [--format text|json]
    snakepit diagnose-scaling [--max-workers N] [--threads-per-worker T] [--format text|json]
    snakepit demo
    snakepit recycle-worker POOL WORKER_ID [--target PID|FILE]

``profile-inspector``, ``pools`` and ``recycle-worker`` attach to pools living in *other*
processes (a Jupyter kernel, a script) through their admin endpoint (see
:mod:`snakepit.admin`). Examples::

    $ snakepit pools
    $ snakepit profile-inspector --detailed --recommendations
    $ snakepit profile-inspector --format json | jq '.default.utilization_percent'

Exit codes: 0 success, 1 error (in JSON mode an ``{"error": "..."}`` object is printed),
2 usage error.

The package: ``app`` (the click wiring and :func:`main`), one module per command
(``inspect``: profile-inspector, ``pools``: pools and recycle-worker, ``scaling``:
diagnose-scaling, ``demo``), ``managers`` (attaching to the live managers) and the text
they print: ``output`` (console, formats), ``render`` (the inspector report, the pools
table), ``render_scaling``.
"""
from __future__ import annotations

from .app import get_cli, main
from .output import CLIError
from .render import render_inspection, render_pool, utilization_badge
from .scaling import analyse_pools

__all__ = ["CLIError", "analyse_pools", "get_cli", "main", "render_inspection", "render_pool", "utilization_badge"]
