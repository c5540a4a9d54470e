"""The Dask backend (``start_pool(..., cluster=...)``, ``pool.backend == "dask"``).

The pool's workers run on the hosts of a Dask ``distributed`` cluster, as children of the
Dask worker processes, started by a ``WorkerPlugin`` registered for the pool (see
:mod:`.plugin`, which runs inside the Dask workers). This side (the kernel):

* connects a ``distributed.Client`` (its own, from a scheduler address or a Cluster
  object — closed with the pool — or the Client it was given, left open);
* places workers over the *currently* running Dask workers in proportion to their thread
  counts (later joiners included; closing ones excluded), one ``Client.run`` per start;
* reaches each worker over gRPC on TCP with the pool's random secret in every call's
  metadata, and TLS with the cluster's certificates when its ``Security`` uses TLS;
* learns of exits from the Dispatch stream breaking (the pool's side) and from a status
  poll through Dask every :data:`POLL_INTERVAL` s (the plugin knows its children's exit
  codes; the handles of a Dask worker that left the cluster exit with :data:`LOST_EXIT_CODE`);
* renews every worker's lease with a Ping every third of ``cluster_lease`` (a thread
  ``snakepit-dask-<pool>``), so workers outlive no dead kernel by more than the lease.

See docs/cluster.md.
"""
from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
import uuid
from typing import Any, Callable, Mapping, Sequence

from ...config import PoolConfig
from ...connection import WorkerConnection
from ...errors import ClusterError, ConfigError
from ...launcher import apply_preload
from ...protocol import worker_pb2 as pb
from ..base import Backend, StartFailure, WorkerHandle

log = logging.getLogger("snakepit.backends.dask")

POLL_INTERVAL = 0.5
LOST_EXIT_CODE = 255
"""Exit code reported for a worker whose Dask worker left the cluster and that no longer
answers (its real code is unknown: Dask cannot be asked any more)."""
_CLOSING = {"closing", "closing_gracefully", "closed", "failed"}


def _import_distributed():  # type: ignore[no-untyped-def]
    try:
        import distributed  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigError("cluster", 'a cluster pool needs Dask distributed: pip install "snakepit[dask]" '
                                     f"({exc})") from exc
    return distributed


def _local_addresses() -> set[str]:
    names = {"localhost", socket.gethostname()}
    out = {"127.0.0.1", "::1"}
    for name in names:
        try:
            for info in socket.getaddrinfo(name, None):
                out.add(str(info[4][0]))
        except OSError:
            pass
    return out


from .handle import SECRET_METADATA_KEY, DaskWorkerHandle  # noqa: E402,F401 - re-exported


class DaskBackend(Backend):
    """Places a pool's workers on a Dask cluster (``pool.backend == "dask"``)."""

    name = "dask"

    def __init__(self, config: PoolConfig, env: Mapping[str, str], capacity: int) -> None:
        distributed = _import_distributed()
        from . import plugin as plugin_mod  # noqa: PLC0415 - imports distributed

        self.config = config
        self.capacity = capacity
        self.env = self._worker_env(config, env)
        self.local_addresses = _local_addresses()
        self.client, self._own_client = self._connect(distributed, config.cluster, config.cluster_connect_timeout)
        self.scheduler_address = str(self.client.scheduler.address)
        self.secret = secrets.token_urlsafe(32).encode()
        self._metadata = ((SECRET_METADATA_KEY, self.secret.decode()),)
        self._lock = threading.Lock()
        self._handles: dict[str, DaskWorkerHandle] = {}
        self._unusable: dict[str, str] = {}  # Dask worker address -> why it cannot run snakepit
        self._probed: set[str] = set()
        self._closed = False
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.plugin_name = f"snakepit-{config.name}-{uuid.uuid4().hex[:12]}"
        try:
            self.credentials, self._channel_options = self._tls(self.client.security)
            self._wait_for_workers(config.startup_timeout)
            self._probe_new_workers()
            if not self._usable_workers():
                raise ClusterError("no Dask worker of the cluster at "
                                   f"{self.scheduler_address} can run snakepit workers: "
                                   + "; ".join(self._unusable.values()))
            self.plugin = plugin_mod.SnakepitPlugin(self.plugin_name, self.secret, config.cluster_drain_timeout,
                                                    config.cluster_lease)
            try:
                self.client.register_plugin(self.plugin, name=self.plugin_name)
            except Exception as exc:  # noqa: BLE001
                if not self._unusable:
                    raise
                # Dask raises the first worker's failure: one whose Python cannot load the
                # plugin (named above, never placed on); the others have it.
                log.info("pool %r: the snakepit plugin could not be set up on a Dask worker that cannot "
                         "run snakepit (%s)", config.name, exc)
        except BaseException:
            self._close_client()
            raise
        self._remote = plugin_mod
        self._thread = threading.Thread(target=self._watch, name=f"snakepit-dask-{config.name}", daemon=True)
        self._thread.start()

    # -- connecting --------------------------------------------------------------------
    @staticmethod
    def _connect(distributed: Any, cluster: Any, timeout: float) -> tuple[Any, bool]:
        if isinstance(cluster, distributed.Client):
            if cluster.status not in ("running", "connecting", "newly-created"):
                raise ClusterError(f"the distributed.Client given as cluster= is {cluster.status}")
            return cluster, False
        target = cluster if isinstance(cluster, str) else cluster
        what = cluster if isinstance(cluster, str) else getattr(cluster, "scheduler_address", repr(cluster))
        try:
            client = distributed.Client(target, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(f"cannot reach the Dask scheduler at {what} within {timeout:g}s: {exc}") from exc
        except ValueError as exc:
            raise ConfigError("cluster", f"{what!r} is not a usable scheduler address: {exc}") from exc
        return client, True

    def _close_client(self) -> None:
        if self._own_client:
            try:
                self.client.close(timeout=5)
            except Exception:  # noqa: BLE001
                log.debug("closing the Dask client failed", exc_info=True)

    @staticmethod
    def _worker_env(config: PoolConfig, env: Mapping[str, str]) -> dict[str, str]:
        """What the workers' environment adds to the Dask worker's: the pool's own settings
        (``env``, the profile's thread limits, ``preload``), not this kernel's environment."""
        base = os.environ
        out = {k: v for k, v in env.items() if base.get(k) != v and k != "PYTHONPATH"}
        out.update(config.env)
        apply_preload(out, config.preload)
        return out

    def _tls(self, security: Any) -> tuple[Any, list]:
        """gRPC channel credentials from the cluster's ``distributed.Security``, when it uses TLS."""
        if security is None or not self.scheduler_address.startswith("tls://"):
            return None, []
        import grpc  # noqa: PLC0415

        def read(value: str | None) -> bytes | None:
            if not value:
                return None
            if "-----BEGIN" in value:
                return value.encode()
            with open(value, "rb") as fh:
                return fh.read()

        ca = read(security.tls_ca_file)
        cert = read(security.tls_client_cert)
        key = read(security.tls_client_key) or (cert if cert and b"PRIVATE KEY" in cert else None)
        creds = grpc.ssl_channel_credentials(ca, key, cert)
        from .plugin import tls_name  # noqa: PLC0415

        # The workers serve the Dask worker certificate; name it as gRPC's expected host (Dask's
        # own TLS verifies the chain against the CA, not host names; so do these channels).
        worker_cert = read(security.tls_worker_cert) or cert or b""
        name = tls_name(worker_cert)
        return creds, ([("grpc.ssl_target_name_override", name)] if name else [])

    def _wait_for_workers(self, timeout: float) -> None:
        try:
            self.client.wait_for_workers(1, timeout=timeout)
        except TimeoutError as exc:
            raise ClusterError(f"the Dask cluster at {self.scheduler_address} has no workers after "
                               f"{timeout:g}s (startup_timeout)") from exc

    def _dask_workers(self) -> dict[str, dict[str, Any]]:
        info = self.client.scheduler_info(n_workers=-1)
        return dict(info.get("workers", {}))

    def _probe_new_workers(self, workers: Mapping[str, Any] | None = None) -> None:
        """Check that new Dask workers' Python can import snakepit and grpc (say which can't)."""
        workers = self._dask_workers() if workers is None else workers
        new = [a for a in workers if a not in self._probed]
        if not new:
            return
        results = self._run(_probe_function(), workers=new, timeout=self.config.cluster_connect_timeout + 10)
        for addr in new:
            res = results.get(addr)
            self._probed.add(addr)
            if isinstance(res, dict) and res.get("ok"):
                continue
            host = workers.get(addr, {}).get("host", addr)
            if isinstance(res, dict):
                why = res.get("error")
                where = res.get("python", "")
                host = res.get("host", host)
            else:
                why, where = res, ""
            self._unusable[addr] = (f"Dask worker {addr} on host {host}: its Python {where} cannot run snakepit "
                                    f"workers ({why}); install the same snakepit and grpcio there")
            log.warning("%s", self._unusable[addr])

    def _run(self, fn: Any, *args: Any, workers: list[str], timeout: float, **kwargs: Any) -> dict[str, Any]:
        """``Client.run`` on ``workers`` with a timeout; failures come back as exceptions."""
        client = self.client
        return client.sync(client._run, fn, *args, workers=workers, on_error="return",
                           callback_timeout=timeout, **kwargs)

    def _usable_workers(self, workers: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        workers = self._dask_workers() if workers is None else workers
        return {a: w for a, w in workers.items()
                if a not in self._unusable and str(w.get("status", "running")) not in _CLOSING}

    # -- placement ---------------------------------------------------------------------
    def _place(self, worker_ids: Sequence[str]) -> dict[str, list[str]]:
        workers = self._dask_workers()
        self._probe_new_workers(workers)
        usable = self._usable_workers(workers)
        if not usable:
            extra = ("; ".join(self._unusable.values())) if self._unusable else "none is running"
            raise ClusterError(f"the Dask cluster at {self.scheduler_address} has no worker to host "
                               f"snakepit workers ({extra})")
        with self._lock:
            load = {a: 0 for a in usable}
            for h in self._handles.values():
                if h.dask_worker in load and not h.draining:
                    load[h.dask_worker] += 1
        out: dict[str, list[str]] = {}
        for wid in worker_ids:
            addr = min(usable, key=lambda a: ((load[a] + 1) / max(1, int(usable[a].get("nthreads", 1) or 1)), a))
            load[addr] += 1
            out.setdefault(addr, []).append(wid)
        return out

    def _spec(self, worker_id: str) -> dict[str, Any]:
        cfg = self.config
        spec: dict[str, Any] = {
            "worker_id": worker_id, "adapter": cfg.adapter, "profile": cfg.profile,
            "capacity": self.capacity, "max_message_bytes": cfg.max_message_bytes, "env": self.env,
            "cwd": cfg.cwd, "startup_timeout": cfg.startup_timeout,
        }
        if cfg.adapter_options:
            import pickle  # noqa: PLC0415

            try:
                import cloudpickle  # noqa: PLC0415

                spec["adapter_options"] = cloudpickle.dumps(dict(cfg.adapter_options))
            except ImportError:
                spec["adapter_options"] = pickle.dumps(dict(cfg.adapter_options))
        return spec

    def start_workers(self, worker_ids: Sequence[str], timeout: float) -> list[WorkerHandle | StartFailure]:
        if self._closed:
            return [StartFailure(w, "the pool's Dask backend is closed") for w in worker_ids]
        try:
            placement = self._place(worker_ids)
        except ClusterError as exc:
            return [StartFailure(w, str(exc)) for w in worker_ids]
        assignment = {addr: [self._spec(w) for w in wids] for addr, wids in placement.items()}
        t0 = time.monotonic()
        reports: dict[str, tuple[str, dict[str, Any]]] = {}
        try:
            results = self._run(self._remote.remote_start, self.plugin_name, assignment, timeout,
                                workers=list(assignment), timeout=timeout + 10.0)
        except BaseException as exc:  # interrupted or timed out: leave nothing running
            self._stop_ids(placement, list(worker_ids), 0.5)
            if not isinstance(exc, Exception):
                raise
            return [StartFailure(w, f"starting through Dask failed: {exc!r}") for w in worker_ids]
        for addr, wids in placement.items():
            res = results.get(addr)
            if isinstance(res, BaseException) or not isinstance(res, list):
                why = _explain_remote_error(res, addr)
                for wid in wids:
                    reports[wid] = (addr, {"ok": False, "error": why})
                continue
            for rep in res:
                reports[rep["worker_id"]] = (addr, rep)
        out: list[WorkerHandle | StartFailure] = []
        for wid in worker_ids:
            addr, rep = reports.get(wid, ("", {"ok": False, "error": "no report from its Dask worker"}))
            if rep.get("ok"):
                handle = DaskWorkerHandle(self, wid, addr, rep, t0)
                with self._lock:
                    self._handles[wid] = handle
                out.append(handle)
            else:
                error = str(rep.get("error"))
                if addr and addr not in error:
                    error = f"on Dask worker {addr}: {error}"
                out.append(StartFailure(wid, error))
        return out

    def _stop_ids(self, placement: Mapping[str, list[str]], worker_ids: list[str], grace: float) -> dict[str, Any]:
        try:
            results = self._run(self._remote.remote_stop, self.plugin_name, worker_ids, grace,
                                workers=list(placement), timeout=grace + 10.0)
        except Exception:  # noqa: BLE001
            return {}
        return results

    # -- connections and control ---------------------------------------------------------
    def open_connection(self, handle: DaskWorkerHandle, *, max_message_bytes: int,
                        on_reply: Callable[[pb.Reply], None],
                        on_broken: Callable[[BaseException | None], None]) -> WorkerConnection:
        return WorkerConnection(handle.address, name=handle.worker_id, max_message_bytes=max_message_bytes,
                                on_reply=on_reply, on_broken=on_broken, credentials=self.credentials,
                                metadata=self._metadata,
                                options=[("grpc.keepalive_time_ms", 2000), ("grpc.keepalive_timeout_ms", 5000),
                                         ("grpc.keepalive_permit_without_calls", 1), *self._channel_options])

    def signal(self, handle: DaskWorkerHandle, sig: int) -> None:
        if self._closed:
            return
        try:
            self._run(self._remote.remote_signal, self.plugin_name, handle.worker_id, sig,
                      workers=[handle.dask_worker], timeout=5.0)
        except Exception:  # noqa: BLE001 - its Dask worker is gone: the poll reports the exit
            log.debug("signal %s to %s failed", sig, handle.worker_id, exc_info=True)
        self.poll_now()

    def stop_workers(self, handles: Sequence[WorkerHandle], grace: float) -> None:
        """One ``Client.run`` per Dask worker: SIGTERM, then SIGKILL after ``grace``."""
        mine = [h for h in handles if isinstance(h, DaskWorkerHandle) and h.exit_code is None]
        by_worker: dict[str, list[str]] = {}
        for h in mine:
            by_worker.setdefault(h.dask_worker, []).append(h.worker_id)
        if not by_worker:
            return
        results: dict[str, Any] = {}
        try:
            results = self.client.sync(self._stop_all, by_worker, grace, callback_timeout=grace + 15.0)
        except Exception:  # noqa: BLE001
            log.debug("stopping through Dask failed", exc_info=True)
        for h in mine:
            codes = results.get(h.dask_worker)
            code = codes.get(h.worker_id) if isinstance(codes, dict) else None
            if code is not None:
                h._set_exit(code)
            elif not isinstance(codes, dict) and h.dask_worker not in self._safe_workers():
                h._set_exit(LOST_EXIT_CODE)

    async def _stop_all(self, by_worker: Mapping[str, list[str]], grace: float) -> dict[str, Any]:
        import asyncio  # noqa: PLC0415

        async def one(addr: str, wids: list[str]) -> Any:
            res = await self.client._run(self._remote.remote_stop, self.plugin_name, wids, grace,
                                         workers=[addr], on_error="return")
            return res.get(addr)

        pairs = list(by_worker.items())
        values = await asyncio.gather(*(one(a, w) for a, w in pairs), return_exceptions=True)
        return {a: v for (a, _), v in zip(pairs, values)}

    def _safe_workers(self) -> set[str]:
        try:
            return set(self._dask_workers())
        except Exception:  # noqa: BLE001
            return set()

    # -- exits, drains, leases -------------------------------------------------------------
    def poll_now(self) -> None:
        self._wake.set()

    def _forget(self, handle: DaskWorkerHandle) -> None:
        with self._lock:
            if self._handles.get(handle.worker_id) is handle:
                del self._handles[handle.worker_id]

    def _watch(self) -> None:
        renew_every = max(0.2, self.config.cluster_lease / 3.0)
        last_renew = 0.0
        while not self._closed:
            self._wake.wait(POLL_INTERVAL)
            self._wake.clear()
            if self._closed:
                return
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001
                if not self._closed:
                    log.debug("status poll through Dask failed", exc_info=True)
            now = time.monotonic()
            if now - last_renew >= renew_every:
                last_renew = now
                self._renew_leases()

    def poll_once(self) -> None:
        with self._lock:
            handles = list(self._handles.values())
        if not handles:
            return
        workers = self._dask_workers()
        by_worker: dict[str, list[DaskWorkerHandle]] = {}
        gone = [h for h in handles if h.dask_worker not in workers]
        if gone:
            self._check_orphans(gone)
        for h in handles:
            if h.dask_worker not in workers:
                continue
            if str(workers[h.dask_worker].get("status", "")) in _CLOSING:
                h._set_draining()
            by_worker.setdefault(h.dask_worker, []).append(h)
        if not by_worker:
            return
        results = self.client.sync(self._status_all, {a: [h.worker_id for h in hs] for a, hs in by_worker.items()},
                                   callback_timeout=10.0)
        for addr, hs in by_worker.items():
            res = results.get(addr)
            if not isinstance(res, dict):
                continue
            if res.get("draining"):
                for h in hs:
                    h._set_draining()
            for h in hs:
                code = res["codes"].get(h.worker_id)
                if isinstance(code, int):
                    h._set_exit(code)
                elif code == "unknown":
                    h._set_exit(LOST_EXIT_CODE)

    def _check_orphans(self, handles: list[DaskWorkerHandle]) -> None:
        """Workers whose Dask worker left the scheduler: one being retired still drains (it
        answers a Ping: draining); one that does not answer is gone with its Dask worker."""
        request = pb.PingRequest(message="lease")
        pending = []
        for h in handles:
            conn = h.conn
            if conn is None:
                h._set_exit(LOST_EXIT_CODE)
                continue
            try:
                pending.append((h, conn.ping_future(request, timeout=2.0)))
            except Exception:  # noqa: BLE001 - a closed connection
                h._set_exit(LOST_EXIT_CODE)
        for h, fut in pending:
            try:
                fut.result()
                h._set_draining()
            except Exception:  # noqa: BLE001
                h._set_exit(LOST_EXIT_CODE)

    async def _status_all(self, by_worker: Mapping[str, list[str]]) -> dict[str, Any]:
        import asyncio  # noqa: PLC0415

        async def one(addr: str, wids: list[str]) -> Any:
            res = await self.client._run(self._remote.remote_status, self.plugin_name, wids,
                                         workers=[addr], on_error="return")
            return res.get(addr)

        pairs = list(by_worker.items())
        values = await asyncio.gather(*(one(a, w) for a, w in pairs), return_exceptions=True)
        return {a: v for (a, _), v in zip(pairs, values)}

    def _renew_leases(self) -> None:
        """A Ping to every connected worker renews its lease (so does the pool's heartbeat)."""
        with self._lock:
            conns = [h.conn for h in self._handles.values() if h.conn is not None and h.exit_code is None]
        request = pb.PingRequest(message="lease")
        futures = []
        for conn in conns:
            try:
                futures.append(conn.ping_future(request, timeout=max(1.0, self.config.cluster_lease / 3.0)))
            except Exception:  # noqa: BLE001 - a closed connection
                pass
        for fut in futures:
            try:
                fut.result()
            except Exception:  # noqa: BLE001 - the heartbeat and the poll deal with dead workers
                pass

    # -- the rest of the seam --------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=15.0)
        try:  # the plugin's teardown stops whatever is left on every Dask worker
            self.client.sync(self.client.unregister_worker_plugin, self.plugin_name, callback_timeout=30.0)
        except Exception:  # noqa: BLE001
            log.debug("unregistering the snakepit plugin failed", exc_info=True)
        self._close_client()

    def describe(self) -> dict[str, object]:
        try:
            workers = self._dask_workers()
        except Exception:  # noqa: BLE001
            workers = {}
        return {"backend": self.name, "scheduler": self.scheduler_address, "dask_workers": sorted(workers),
                "unusable_dask_workers": dict(self._unusable), "tls": self.credentials is not None,
                "lease_s": self.config.cluster_lease}


def _explain_remote_error(res: Any, addr: str) -> str:
    text = f"{type(res).__name__}: {res}" if isinstance(res, BaseException) else repr(res)
    if isinstance(res, (ModuleNotFoundError, ImportError)) or "No module named" in text:
        return f"Dask worker {addr}: its Python cannot import snakepit or grpc ({text})"
    return f"Dask worker {addr}: {text}"


_PROBE_SOURCE = '''
def snakepit_probe():
    import socket, sys
    try:
        import grpc
        import snakepit.worker.server
    except BaseException as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "python": sys.executable,
                "host": socket.gethostname()}
    return {"ok": True, "python": sys.executable, "host": socket.gethostname()}
'''


def _probe_function() -> Callable[[], dict[str, Any]]:
    """A probe pickled by value (its module is not importable), so it runs on a Dask worker
    that lacks snakepit and says so."""
    namespace: dict[str, Any] = {"__name__": "snakepit_dask_probe"}
    exec(compile(_PROBE_SOURCE, "<snakepit-dask-probe>", "exec"), namespace)  # noqa: S102
    return namespace["snakepit_probe"]
