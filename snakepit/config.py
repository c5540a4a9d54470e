"""Pool configuration: every setting, its default, and its validation.

Example::

    cfg = snakepit.PoolConfig(name="hpc", profile="thread", pool_size=2, threads_per_worker=8)
    pool = snakepit.start_pool(config=cfg)

Bad values raise :class:`snakepit.ConfigError` naming the key, at construction time.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .errors import ConfigError

__all__ = ["PoolConfig", "DEFAULT_ADAPTER", "PROFILES"]

DEFAULT_ADAPTER = "snakepit.worker.builtin:DefaultAdapter"
PROFILES = ("process", "thread")
START_METHODS = ("forkserver", "spawn")
TRANSPORTS = ("lane", "grpc")
TRANSPORT_ENV = "SNAKEPIT_TRANSPORT"

DEFAULT_MAX_QUEUE_SIZE = 1000
DEFAULT_QUEUE_TIMEOUT = 5.0
DEFAULT_STARTUP_TIMEOUT = 30.0
DEFAULT_HEARTBEAT_INTERVAL = 2.0
DEFAULT_THREADS_PER_WORKER = 10
DEFAULT_MAX_MESSAGE_MB = 256
DEFAULT_CLUSTER_LEASE = 10.0
DEFAULT_CLUSTER_CONNECT_TIMEOUT = 10.0
DEFAULT_CLUSTER_DRAIN_TIMEOUT = 20.0


#: Longest time setting: larger values are clamped (about 115 days).
MAX_SECONDS = 1e7


def _default_pool_size() -> int:
    return os.cpu_count() or 2


@dataclass(frozen=True)
class PoolConfig:
    """Every setting of a pool. All arguments are keyword-only.

    Args:
        name: the pool's name (``snakepit.get_pool(name)``).
        profile: ``"process"`` (many single-threaded workers, capacity 1 each) or ``"thread"``
            (few workers, each running ``threads_per_worker`` requests at once).
        pool_size: number of worker processes. Default: CPU count for ``process``, 2 for ``thread``.
        threads_per_worker: concurrent requests per worker for the ``thread`` profile (ignored
            for ``process``, where it is 1).
        adapter: ``"module:Class"`` of a :class:`snakepit.Adapter` subclass loaded in each worker.
        adapter_options: keyword arguments passed to the adapter's constructor (picklable).
        env: extra environment variables for the workers; they win over snakepit's defaults
            (``OMP_NUM_THREADS`` and friends are 1 for ``process`` and ``threads_per_worker``
            for ``thread``).
        python: the worker interpreter (default: this interpreter). It must be able to import
            ``snakepit`` and the adapter.
        cwd: working directory of the workers (default: the current one).
        worker_ttl: recycle a worker after this many seconds (``None``: never).
        worker_max_requests: recycle a worker after this many requests (``None``: never).
        memory_threshold_mb: recycle a worker whose process RSS (children included) exceeds this.
        recycle_jitter: spread recycling by up to this fraction of ttl / max_requests (0–1) so
            workers started together do not all recycle at once.
        recycle_grace: seconds a recycling worker may take to finish in-flight requests.
        max_queue_size: requests that may wait for a free worker; one more raises
            :class:`PoolSaturatedError`.
        queue_timeout: seconds a request may wait in the queue (``None``: forever).
        request_timeout: default seconds a request may run (``None``: no limit). A per-call
            ``timeout=`` overrides it.
        startup_timeout: seconds a worker may take to become ready.
        heartbeat_interval: seconds between liveness pings (``None``: no heartbeat; crashes are
            still detected at once from the process exit).
        heartbeat_max_missed: missed pings after which a worker is declared unhealthy and replaced.
        max_message_mb: largest argument or result payload, in MiB.
        history_interval: seconds between diagnostics samples (``None``: no background sampling).
        history_size: samples kept per pool (a ring buffer).
        start_method: how worker processes are started: ``"forkserver"`` (fork each worker
            from a warmed template process that imported gRPC and snakepit's worker side once:
            ≈ 1 ms and ≈ 5 MB USS per worker), ``"spawn"`` (a fresh ``python -m
            snakepit.worker`` each: ≈ 0.2 s of CPU and ≈ 19 MB USS), or ``None``:
            ``$SNAKEPIT_START_METHOD``, else ``forkserver`` where available (Linux), else
            ``spawn``. ``forkserver`` serves only the pool's own interpreter: with another
            ``python`` (a wrapper script, another venv) workers are spawned. See
            docs/lifecycle.md and docs/performance.md.
        preload: modules every worker imports before it serves (e.g. ``["numpy", "mylib.model"]``).
            With ``forkserver`` they are imported once, in the template process, so their memory
            is shared by all workers instead of paid by each (like
            ``multiprocessing.set_forkserver_preload``); a module that fails to import makes
            the workers' start fail with its error.
        pipeline_depth: how many requests the pool may send ahead to a busy worker, to wait
            *there* rather than in the pool's queue, so that the worker starts the next one
            without a round trip and requests sent together travel in one gRPC message. They
            still count as queued (``max_queue_size``, ``queue_timeout``, queue depth) until
            they start, and ``load`` never exceeds capacity. ``None`` (default): automatic —
            only calls the pool has seen finish in under 2 ms, as many as make ≈ 4 ms of
            waiting work (at most 64); ``0``: never; ``N``: up to N, whatever the calls.
            Sessions and streams are never pipelined. See docs/performance.md.
        cluster: run the workers on a Dask ``distributed`` cluster instead of this machine
            (``pool.backend == "dask"``; ``pip install "snakepit[dask]"``): a scheduler address
            (``"tcp://10.0.0.5:8786"``), a ``distributed.Client`` (used as is, left open), or
            any Cluster object with ``.scheduler_address`` (``LocalCluster``, ``SLURMCluster``,
            ``KubeCluster`` …). ``None`` (default): local workers. See docs/cluster.md.
        cluster_lease: seconds a cluster worker outlives its last renewal by the manager
            (renewed every third of it): a kernel that dies leaves nothing running after it.
        cluster_connect_timeout: seconds to reach the Dask scheduler before ``ClusterError``.
        cluster_drain_timeout: seconds the workers of a Dask worker that Dask retires may take
            to finish what they hold before they are killed.
        max_pool_size: the hard cap on ``pool.scale(n)`` and ``pool.adapt(maximum=…)``
            (``None``: 4096).
        transport: how requests and replies travel to *local* workers: ``"lane"``
            (length-prefixed protobuf messages on the worker's owner-only Unix socket, no
            gRPC on the call path: the fastest), ``"grpc"`` (the gRPC Dispatch stream), or
            ``None``: ``$SNAKEPIT_TRANSPORT``, else ``"lane"``. Both carry the same
            ``worker.proto`` messages and every feature; heartbeats, metrics and shutdown
            use gRPC either way, and cluster workers always use gRPC over TCP (``"lane"``
            with ``cluster=`` is a ``ConfigError``). See docs/performance.md.
    """

    name: str = "default"
    profile: str = "process"
    pool_size: int | None = None
    threads_per_worker: int = DEFAULT_THREADS_PER_WORKER
    adapter: str = DEFAULT_ADAPTER
    adapter_options: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    python: str = field(default_factory=lambda: sys.executable)
    cwd: str | None = None
    worker_ttl: float | None = None
    worker_max_requests: int | None = None
    memory_threshold_mb: float | None = None
    recycle_jitter: float = 0.0
    recycle_grace: float = 30.0
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE
    queue_timeout: float | None = DEFAULT_QUEUE_TIMEOUT
    request_timeout: float | None = None
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT
    heartbeat_interval: float | None = DEFAULT_HEARTBEAT_INTERVAL
    heartbeat_max_missed: int = 3
    max_message_mb: int = DEFAULT_MAX_MESSAGE_MB
    history_interval: float | None = 1.0
    history_size: int = 3600
    start_method: str | None = None
    pipeline_depth: int | None = None
    preload: Sequence[str] = ()
    cluster: Any = None
    cluster_lease: float = DEFAULT_CLUSTER_LEASE
    cluster_connect_timeout: float = DEFAULT_CLUSTER_CONNECT_TIMEOUT
    cluster_drain_timeout: float = DEFAULT_CLUSTER_DRAIN_TIMEOUT
    max_pool_size: int | None = None
    transport: str | None = None

    def __post_init__(self) -> None:
        _check_str(self, "name")
        if not self.name.strip() or any(c in self.name for c in "/\\\0"):
            raise ConfigError("name", f"{self.name!r} is not a usable pool name")
        if self.profile not in PROFILES:
            raise ConfigError("profile", f"must be one of {PROFILES}, got {self.profile!r}")
        if self.pool_size is None:
            object.__setattr__(self, "pool_size", _default_pool_size() if self.profile == "process" else 2)
        _check_int(self, "pool_size", minimum=1, maximum=4096)
        _check_int(self, "max_pool_size", minimum=1, maximum=4096, optional=True)
        if self.max_pool_size is not None and self.pool_size > self.max_pool_size:
            raise ConfigError("pool_size", f"{self.pool_size} is above max_pool_size={self.max_pool_size}")
        _check_int(self, "threads_per_worker", minimum=1, maximum=1024)
        if self.profile == "process" and self.threads_per_worker != DEFAULT_THREADS_PER_WORKER:
            # Accepted but meaningless: a process worker runs one request at a time.
            pass
        _check_str(self, "adapter")
        module, sep, cls = self.adapter.partition(":")
        if not sep or not module or not cls or not all(p.isidentifier() for p in module.split(".") + cls.split(".")):
            raise ConfigError("adapter", f"must look like 'package.module:ClassName', got {self.adapter!r}")
        if not isinstance(self.adapter_options, Mapping):
            raise ConfigError("adapter_options", "must be a dict of keyword arguments")
        if not isinstance(self.env, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.env.items()
        ):
            raise ConfigError("env", "must be a dict of str to str")
        object.__setattr__(self, "env", dict(self.env))
        object.__setattr__(self, "adapter_options", dict(self.adapter_options))
        _check_str(self, "python")
        if shutil.which(self.python) is None and not os.access(self.python, os.X_OK):
            raise ConfigError("python", f"{self.python!r} is not an executable interpreter")
        if self.cwd is not None and not os.path.isdir(self.cwd):
            raise ConfigError("cwd", f"{self.cwd!r} is not a directory")
        _check_number(self, "worker_ttl", optional=True, positive=True)
        _check_int(self, "worker_max_requests", minimum=1, optional=True)
        _check_number(self, "memory_threshold_mb", optional=True, positive=True)
        _check_number(self, "recycle_jitter")
        if not 0.0 <= self.recycle_jitter <= 1.0:
            raise ConfigError("recycle_jitter", f"must be between 0 and 1, got {self.recycle_jitter}")
        _check_number(self, "recycle_grace", positive=True)
        _check_int(self, "max_queue_size", minimum=0)
        _check_number(self, "queue_timeout", optional=True, positive=True)
        _check_number(self, "request_timeout", optional=True, positive=True)
        _check_number(self, "startup_timeout", positive=True)
        for key in ("queue_timeout", "request_timeout", "worker_ttl"):
            if getattr(self, key) == math.inf:  # "no limit", like None
                object.__setattr__(self, key, None)
        for key in ("queue_timeout", "request_timeout", "worker_ttl", "startup_timeout", "recycle_grace",
                    "heartbeat_interval"):
            value = getattr(self, key)
            if value is not None and value > MAX_SECONDS:  # huge values clamp (timers overflow past it)
                object.__setattr__(self, key, MAX_SECONDS)
        _check_number(self, "heartbeat_interval", optional=True, positive=True)
        _check_int(self, "heartbeat_max_missed", minimum=1)
        _check_int(self, "max_message_mb", minimum=1, maximum=2047)
        _check_number(self, "history_interval", optional=True, positive=True)
        _check_int(self, "history_size", minimum=1)
        _check_int(self, "pipeline_depth", minimum=0, maximum=4096, optional=True)
        if not isinstance(self.preload, (list, tuple)) or not all(
            isinstance(m, str) and m.strip() and all(part.isidentifier() for part in m.strip().split("."))
            for m in self.preload
        ):
            raise ConfigError("preload", f"must be a list of module names, got {self.preload!r}")
        object.__setattr__(self, "preload", tuple(m.strip() for m in self.preload))
        if self.start_method is not None and self.start_method not in START_METHODS:
            raise ConfigError("start_method", f"must be one of {START_METHODS} or None, got {self.start_method!r}")
        _check_number(self, "cluster_lease", positive=True)
        _check_number(self, "cluster_connect_timeout", positive=True)
        _check_number(self, "cluster_drain_timeout", positive=True)
        if self.cluster is not None:
            _check_cluster(self.cluster)
        if self.transport is not None and self.transport not in TRANSPORTS:
            raise ConfigError("transport", f"must be one of {TRANSPORTS} or None, got {self.transport!r}")
        if self.transport == "lane" and self.cluster is not None:
            raise ConfigError("transport", "the 'lane' transport is local-only; cluster workers use gRPC "
                                           "(leave transport=None)")
        if self.cluster is None:
            self.resolved_transport  # noqa: B018 - a bad $SNAKEPIT_TRANSPORT fails here, not at start

    @property
    def resolved_transport(self) -> str:
        """The transport local workers use: ``transport``, else ``$SNAKEPIT_TRANSPORT``, else "lane"."""
        if self.transport is not None:
            return self.transport
        value = os.environ.get(TRANSPORT_ENV, "").strip().lower()
        if value and value not in TRANSPORTS:
            raise ConfigError("transport", f"${TRANSPORT_ENV} must be one of {TRANSPORTS}, got {value!r}")
        return value or "lane"

    @property
    def cluster_address(self) -> str | None:
        """The Dask scheduler's address of a cluster pool (None for a local pool)."""
        cluster = self.cluster
        if cluster is None:
            return None
        if isinstance(cluster, str):
            return cluster
        address = getattr(cluster, "scheduler_address", None)
        if address is None:
            scheduler = getattr(cluster, "scheduler", None)
            address = getattr(scheduler, "address", None)
        return str(address) if address else repr(cluster)

    @property
    def capacity_per_worker(self) -> int:
        """Requests one worker serves at once: 1 for ``process``, ``threads_per_worker`` for ``thread``."""
        return 1 if self.profile == "process" else self.threads_per_worker

    @property
    def total_capacity(self) -> int:
        return self.capacity_per_worker * int(self.pool_size or 0)

    @property
    def max_message_bytes(self) -> int:
        return self.max_message_mb * 2**20

    @classmethod
    def from_options(cls, name: str = "default", **options: Any) -> "PoolConfig":
        """Build a config from keyword options, naming any unknown key (with a suggestion)."""
        known = {f.name for f in dataclasses.fields(cls)}
        for key in options:
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(key, f"unknown setting{hint}")
        return cls(name=name, **options)

    def replace(self, **changes: Any) -> "PoolConfig":
        """A copy with some settings changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (adapter options are shown by key only)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["cluster"] = self.cluster_address  # a Client or Cluster object is shown by its address
        out["adapter_options"] = sorted(self.adapter_options)
        out["env"] = dict(self.env)
        return out


def _check_cluster(cluster: Any) -> None:
    """``cluster=``: distributed must be installed; an address string, a Client or a Cluster."""
    try:
        import distributed  # noqa: PLC0415 - only for cluster pools
    except ImportError as exc:
        raise ConfigError("cluster", 'a cluster pool needs Dask distributed, which is not installed: '
                                     f'pip install "snakepit[dask]" ({exc})') from exc
    if isinstance(cluster, str):
        rest = cluster.split("://", 1)[-1]
        if not cluster.strip() or ":" not in rest and "://" not in cluster:
            raise ConfigError("cluster", f"must be a scheduler address like 'tcp://host:8786', got {cluster!r}")
        return
    if isinstance(cluster, distributed.Client):
        return
    if getattr(cluster, "scheduler_address", None) is None:
        raise ConfigError("cluster", "must be a scheduler address, a distributed.Client or a Cluster object "
                                     f"(with .scheduler_address), got {type(cluster).__name__}")


def _check_str(cfg: PoolConfig, key: str) -> None:
    value = getattr(cfg, key)
    if not isinstance(value, str) or not value:
        raise ConfigError(key, f"must be a non-empty string, got {value!r}")


def _check_int(cfg: PoolConfig, key: str, *, minimum: int, maximum: int | None = None, optional: bool = False) -> None:
    value = getattr(cfg, key)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ConfigError(key, f"must be {bound}, got {value}")


def _check_number(cfg: PoolConfig, key: str, *, optional: bool = False, positive: bool = False) -> None:
    value = getattr(cfg, key)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError(key, f"must be a number{' or None' if optional else ''}, got {value!r}")
    if positive and value <= 0:
        raise ConfigError(key, f"must be > 0{' (or None to disable)' if optional else ''}, got {value}")
    object.__setattr__(cfg, key, float(value))
