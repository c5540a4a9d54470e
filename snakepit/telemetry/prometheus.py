"""Prometheus metrics for snakepit pools, served on a loopback port.

Optional: needs ``prometheus_client`` (``pip install 'snakepit[prometheus]'``).

Example::

    import snakepit
    from snakepit.telemetry import prometheus

    pool = snakepit.start_pool("default", pool_size=2)
    exporter = prometheus.start_exporter(port=9464)     # port=0 picks a free port
    print(exporter.url)                                  # http://127.0.0.1:9464/metrics
    ...
    exporter.stop()

The exporter listens on 127.0.0.1 by default. For a Prometheus server on another host, pass
an explicit ``addr`` (an interface's IP, or ``"0.0.0.0"`` for all) and, since the metrics
name your pools and workers, protect it: TLS (``certfile``/``keyfile``, optionally client
certificates with ``client_cafile`` + ``client_auth_required``, the parameters of
``prometheus_client.start_http_server``) and/or HTTP basic auth (``basic_auth=(user,
password)``)::

    exporter = prometheus.start_exporter(port=9464, addr="0.0.0.0",
                                         certfile="exporter.crt", keyfile="exporter.key",
                                         basic_auth=("prometheus", os.environ["SCRAPE_PASSWORD"]))

It exposes:

Gauges, read from the pools at scrape time (labels ``pool``, ``profile``; per worker also
``worker_id``):

=========================================  ===================================================
``snakepit_pool_workers``                  live workers
``snakepit_pool_capacity``                 requests the pool can run at once
``snakepit_pool_load``                     requests running now
``snakepit_pool_utilization_ratio``        load / capacity (0–1)
``snakepit_pool_queue_depth``              requests waiting for a free worker
``snakepit_pool_max_queue_size``           the queue bound (one more is rejected)
``snakepit_worker_capacity`` / ``_load``   per worker
``snakepit_worker_memory_bytes``           RSS of the worker process, children included
``snakepit_worker_requests_served``        requests served by this worker process
``snakepit_worker_uptime_seconds``         age of the worker process
=========================================  ===================================================

Counters and histograms, fed by telemetry events (:mod:`snakepit.telemetry`) from the moment
the exporter starts:

=============================================  =============================================
``snakepit_requests_total``                    ``pool, command, success``
``snakepit_request_duration_seconds``          histogram, ``pool, command``
``snakepit_pool_saturated_total``              requests rejected because the queue was full
``snakepit_pool_capacity_reached_total``       a worker reached its capacity
``snakepit_worker_started_total``              with ``snakepit_worker_startup_seconds``
``snakepit_worker_crashed_total``              ``pool``
``snakepit_worker_recycled_total``             ``pool, reason``
``snakepit_worker_health_check_failed_total``  ``pool``
``snakepit_session_moved_total``               ``pool, reason``
=============================================  =============================================
"""
from __future__ import annotations

import base64
import hmac
import ipaddress
import itertools
import logging
import ssl
import threading
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from ..signals import start_thread

from . import (
    POOL_CAPACITY_REACHED,
    POOL_SATURATED,
    REQUEST_EXECUTED,
    SESSION_MOVED,
    WORKER_CRASHED,
    WORKER_HEALTH_CHECK_FAILED,
    WORKER_RECYCLED,
    WORKER_STARTED,
    attach_many,
    detach,
)

if TYPE_CHECKING:
    from ..pool import Pool

__all__ = ["Exporter", "PoolCollector", "start_exporter"]

DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0, 60.0, 120.0)
STARTUP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)

_ids = itertools.count(1)
log = logging.getLogger("snakepit.telemetry.prometheus")


def _require_client() -> Any:
    try:
        import prometheus_client  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "snakepit.telemetry.prometheus needs prometheus_client: pip install 'snakepit[prometheus]'"
        ) from exc
    return prometheus_client


def _check_addr(addr: str) -> tuple[str, bool]:
    """(the IP to bind, whether it is loopback); ``ValueError`` for a host name or bad address."""
    if addr == "localhost":
        return "127.0.0.1", True
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise ValueError(f"exporter addr must be an IP address (127.0.0.1, ::1, an interface's IP or "
                         f"0.0.0.0), not {addr!r}") from None
    return addr, ip.is_loopback


def _tls_context(certfile: str, keyfile: str, client_cafile: str | None, client_capath: str | None,
                 client_auth_required: bool) -> ssl.SSLContext:
    """A server TLS context, as ``prometheus_client.start_http_server`` builds it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=certfile, keyfile=keyfile)
    if client_cafile is not None or client_capath is not None:
        context.load_verify_locations(client_cafile, client_capath)
    if client_auth_required:
        if client_cafile is None and client_capath is None:
            raise ValueError("client_auth_required needs client_cafile or client_capath "
                             "(the CA that signs the scrapers' certificates)")
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _with_basic_auth(app: Any, user: str, password: str) -> Any:
    """The WSGI ``app`` behind HTTP basic auth (constant-time comparison; 401 otherwise)."""
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def guarded(environ: dict[str, Any], start_response: Any) -> Any:
        given = environ.get("HTTP_AUTHORIZATION", "")
        if hmac.compare_digest(given.encode(), expected.encode()):
            return app(environ, start_response)
        start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="snakepit"'),
                                            ("Content-Type", "text/plain; charset=utf-8")])
        return [b"authentication required\n"]

    return guarded


class PoolCollector:
    """A prometheus_client collector reading pool gauges at scrape time.

    Args:
        pools: the pools to report (``Pool`` objects or names); None means every running pool
            of this process, looked up at each scrape.
    """

    def __init__(self, pools: Iterable["Pool | str"] | None = None) -> None:
        self._pools = list(pools) if pools is not None else None

    def _resolve(self) -> list["Pool"]:
        import snakepit  # noqa: PLC0415

        if self._pools is None:
            return snakepit.list_pools()
        out = []
        for item in self._pools:
            if isinstance(item, str):
                try:
                    out.append(snakepit.get_pool(item))
                except snakepit.PoolNotFoundError:
                    continue
            elif not item.closed:
                out.append(item)
        return out

    def describe(self) -> list[Any]:
        return []  # not known before a scrape; registering does not call collect()

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415

        pool_labels = ["pool", "profile"]
        worker_labels = ["pool", "profile", "worker_id"]
        g = {
            "workers": GaugeMetricFamily("snakepit_pool_workers", "Live workers of the pool.", labels=pool_labels),
            "capacity": GaugeMetricFamily("snakepit_pool_capacity", "Requests the pool can run at once.",
                                          labels=pool_labels),
            "load": GaugeMetricFamily("snakepit_pool_load", "Requests running now.", labels=pool_labels),
            "util": GaugeMetricFamily("snakepit_pool_utilization_ratio", "Load divided by capacity (0-1).",
                                      labels=pool_labels),
            "queue": GaugeMetricFamily("snakepit_pool_queue_depth", "Requests waiting for a free worker.",
                                       labels=pool_labels),
            "max_queue": GaugeMetricFamily("snakepit_pool_max_queue_size", "Queue bound of the pool.",
                                           labels=pool_labels),
            "w_capacity": GaugeMetricFamily("snakepit_worker_capacity", "Requests the worker runs at once.",
                                            labels=worker_labels),
            "w_load": GaugeMetricFamily("snakepit_worker_load", "Requests the worker runs now.", labels=worker_labels),
            "w_memory": GaugeMetricFamily("snakepit_worker_memory_bytes",
                                          "Resident memory of the worker process, children included.",
                                          labels=worker_labels),
            "w_served": GaugeMetricFamily("snakepit_worker_requests_served",
                                          "Requests served by this worker process.", labels=worker_labels),
            "w_uptime": GaugeMetricFamily("snakepit_worker_uptime_seconds", "Age of the worker process.",
                                          labels=worker_labels),
        }
        for pool in self._resolve():
            try:
                stats = pool.statistics()
                workers = pool.list_workers()
            except Exception:
                continue
            labels = [pool.name, pool.profile.name]
            capacity = sum(w.capacity for w in workers)
            load = sum(w.load for w in workers)
            g["workers"].add_metric(labels, len(workers))
            g["capacity"].add_metric(labels, capacity)
            g["load"].add_metric(labels, load)
            g["util"].add_metric(labels, (load / capacity) if capacity else 0.0)
            g["queue"].add_metric(labels, stats.get("queue_depth", 0))
            g["max_queue"].add_metric(labels, stats.get("max_queue_size", 0))
            from ..lifecycle import records_rss_mb  # noqa: PLC0415 - loaded with any pool

            rss_mb = records_rss_mb(pool.worker_records())  # remote workers: as they report it
            for w in workers:
                wl = labels + [w.worker_id]
                g["w_capacity"].add_metric(wl, w.capacity)
                g["w_load"].add_metric(wl, w.load)
                g["w_served"].add_metric(wl, w.requests_served)
                g["w_uptime"].add_metric(wl, w.uptime_s)
                rss = rss_mb.get(w.worker_id)
                if rss is not None:
                    g["w_memory"].add_metric(wl, rss * 2**20)
        yield from g.values()


class _EventMetrics:
    """Counters and histograms fed by telemetry handlers."""

    def __init__(self, registry: Any) -> None:
        pc = _require_client()
        self.requests = pc.Counter("snakepit_requests_total", "Requests executed.",
                                   ["pool", "command", "success"], registry=registry)
        self.duration = pc.Histogram("snakepit_request_duration_seconds", "Request duration on the worker.",
                                     ["pool", "command"], buckets=DURATION_BUCKETS, registry=registry)
        self.saturated = pc.Counter("snakepit_pool_saturated_total", "Requests rejected: the queue was full.",
                                    ["pool"], registry=registry)
        self.capacity_reached = pc.Counter("snakepit_pool_capacity_reached_total",
                                           "A worker reached its capacity.", ["pool", "profile"], registry=registry)
        self.started = pc.Counter("snakepit_worker_started_total", "Workers started.", ["pool"], registry=registry)
        self.startup = pc.Histogram("snakepit_worker_startup_seconds", "Worker start-up time.", ["pool"],
                                    buckets=STARTUP_BUCKETS, registry=registry)
        self.crashed = pc.Counter("snakepit_worker_crashed_total", "Workers that died unexpectedly.", ["pool"],
                                  registry=registry)
        self.recycled = pc.Counter("snakepit_worker_recycled_total", "Workers recycled.", ["pool", "reason"],
                                   registry=registry)
        self.health = pc.Counter("snakepit_worker_health_check_failed_total", "Missed heartbeats.", ["pool"],
                                 registry=registry)
        self.moved = pc.Counter("snakepit_session_moved_total", "Sessions that moved to another worker.",
                                ["pool", "reason"], registry=registry)

    def handle(self, event: tuple[str, ...], measurements: Any, metadata: Any, config: Any) -> None:
        pool = str(metadata.get("pool", ""))
        if event == REQUEST_EXECUTED:
            command = str(metadata.get("command", ""))
            self.requests.labels(pool, command, "true" if metadata.get("success") else "false").inc()
            self.duration.labels(pool, command).observe(float(measurements.get("duration_us", 0)) / 1e6)
        elif event == POOL_SATURATED:
            self.saturated.labels(pool).inc()
        elif event == POOL_CAPACITY_REACHED:
            self.capacity_reached.labels(pool, str(metadata.get("profile", ""))).inc()
        elif event == WORKER_STARTED:
            self.started.labels(pool).inc()
            self.startup.labels(pool).observe(float(measurements.get("startup_ms", 0.0)) / 1e3)
        elif event == WORKER_CRASHED:
            self.crashed.labels(pool).inc()
        elif event == WORKER_RECYCLED:
            self.recycled.labels(pool, str(metadata.get("reason", ""))).inc()
        elif event == WORKER_HEALTH_CHECK_FAILED:
            self.health.labels(pool).inc()
        elif event == SESSION_MOVED:
            self.moved.labels(pool, str(metadata.get("reason", ""))).inc()


_EVENTS = (REQUEST_EXECUTED, POOL_SATURATED, POOL_CAPACITY_REACHED, WORKER_STARTED, WORKER_CRASHED,
           WORKER_RECYCLED, WORKER_HEALTH_CHECK_FAILED, SESSION_MOVED)


class Exporter:
    """A running exporter: ``.port``, ``.url``, ``.registry``, ``.stop()``; a context manager."""

    def __init__(self, port: int = 0, pools: Iterable["Pool | str"] | None = None, *, addr: str = "127.0.0.1",
                 registry: Any = None, certfile: str | None = None, keyfile: str | None = None,
                 client_cafile: str | None = None, client_capath: str | None = None,
                 client_auth_required: bool = False, basic_auth: tuple[str, str] | None = None) -> None:
        pc = _require_client()
        from wsgiref.simple_server import make_server  # noqa: PLC0415

        from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler  # noqa: PLC0415

        addr, loopback = _check_addr(addr)
        if (certfile is None) != (keyfile is None):
            raise ValueError("TLS needs both certfile and keyfile")
        tls = _tls_context(certfile, keyfile, client_cafile, client_capath, client_auth_required) \
            if certfile is not None and keyfile is not None else None
        if tls is None and (client_cafile or client_capath or client_auth_required):
            raise ValueError("client certificates need TLS: pass certfile and keyfile too")
        if basic_auth is not None:
            if (not isinstance(basic_auth, tuple) or len(basic_auth) != 2
                    or not all(isinstance(x, str) and x for x in basic_auth)):
                raise ValueError("basic_auth must be a (user, password) tuple of non-empty strings")
            if ":" in basic_auth[0]:
                raise ValueError("a basic_auth user name cannot contain ':'")
        if not loopback and tls is None and basic_auth is None:
            log.warning("Prometheus exporter on %s without TLS or authentication: anyone who can reach "
                        "this address can read your pools' metrics", addr)
        self.tls = tls is not None
        self.registry = registry if registry is not None else pc.CollectorRegistry(auto_describe=False)
        self.collector = PoolCollector(pools)
        self.registry.register(self.collector)
        self._metrics = _EventMetrics(self.registry)
        self.handler_id = f"snakepit-prometheus-{next(_ids)}-{id(self)}"
        attach_many(self.handler_id, _EVENTS, self._metrics.handle)

        server_cls = ThreadingWSGIServer
        if ":" in addr:
            import socket  # noqa: PLC0415

            class _V6(ThreadingWSGIServer):
                address_family = socket.AF_INET6

            server_cls = _V6
        app = pc.make_wsgi_app(self.registry)
        if basic_auth is not None:
            app = _with_basic_auth(app, *basic_auth)
        try:
            self._httpd = make_server(addr, port, app, server_cls, handler_class=_SilentHandler)
            if tls is not None:  # the handshake happens in the request's thread, not the accept loop
                self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True,
                                                     do_handshake_on_connect=False)
        except BaseException:
            detach(self.handler_id)
            raise
        self.addr = addr
        self.port: int = int(self._httpd.server_port)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="snakepit-prometheus", daemon=True)
        start_thread(self._thread)
        self._stopped = False

    @property
    def url(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/metrics"

    def stop(self) -> None:
        """Stop serving and detach the telemetry handlers. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        detach(self.handler_id)
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5.0)

    def __enter__(self) -> "Exporter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<snakepit Prometheus exporter {self.url}{' stopped' if self._stopped else ''}>"


def start_exporter(port: int = 0, pools: Iterable["Pool | str"] | None = None, *, addr: str = "127.0.0.1",
                   registry: Any = None, certfile: str | None = None, keyfile: str | None = None,
                   client_cafile: str | None = None, client_capath: str | None = None,
                   client_auth_required: bool = False, basic_auth: tuple[str, str] | None = None) -> Exporter:
    """Serve the pools' metrics on ``http://127.0.0.1:<port>/metrics`` and return the handle.

    Args:
        port: TCP port; 0 picks a free one (read it back from ``.port``).
        pools: pools (or names) to report; None means every running pool, at each scrape.
        addr: the IP address to listen on: loopback by default (``localhost`` means
            ``127.0.0.1``). Another address (an interface's IP, ``0.0.0.0`` for all) exposes the
            metrics to the network: use TLS and/or ``basic_auth`` there (a warning is logged
            without either). A host name raises ``ValueError``.
        registry: a ``prometheus_client.CollectorRegistry`` to use (default: a fresh one, so
            that several exporters never collide).
        certfile, keyfile: serve HTTPS with this certificate and private key (PEM).
        client_cafile, client_capath: CA certificates that sign the scrapers' client
            certificates; with ``client_auth_required=True`` a scraper without one is refused.
        basic_auth: ``(user, password)``: every scrape must send them (Prometheus's
            ``basic_auth`` scrape setting); others get 401.

    Example::

        >>> exporter = start_exporter()                       # doctest: +SKIP
        >>> urllib.request.urlopen(exporter.url).read()       # doctest: +SKIP
        b'# HELP snakepit_pool_workers Live workers of the pool. ...'
        >>> exporter.stop()                                   # doctest: +SKIP
    """
    return Exporter(port, pools, addr=addr, registry=registry, certfile=certfile, keyfile=keyfile,
                    client_cafile=client_cafile, client_capath=client_capath,
                    client_auth_required=client_auth_required, basic_auth=basic_auth)
