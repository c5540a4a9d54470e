"""Benchmarks of snakepit against the pools people would use instead (issue 7).

``python -m bench`` runs every peer in its own subprocess and writes
``bench/results/<stamp>.json``, ``latest.json`` and ``latest.md`` (ratios to
``concurrent.futures.ProcessPoolExecutor``). ``python -m bench --quick`` is the smoke-test
size. See ``docs/performance.md``.
"""
