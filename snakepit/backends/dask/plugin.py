"""The Dask side of the Dask backend: a ``WorkerPlugin`` that hosts snakepit workers.

This module runs **inside Dask worker processes** (the pool registers one
:class:`SnakepitPlugin` per pool; the scheduler hands it to every Dask worker, those that
join later included). The pool's manager reaches it through ``Client.run`` with the
``remote_*`` functions below, which find the plugin by name on ``dask_worker.plugins``.

A snakepit worker started here is a **child of the Dask worker process**:

* spawned with the Dask worker's own Python (``sys.executable -m snakepit.worker``) from a
  long-lived spawner thread (``PR_SET_PDEATHSIG`` follows the spawning thread), in a new
  session (a Ctrl-C to the Dask worker's terminal does not reach it);
* it dies with the Dask worker: ``PR_SET_PDEATHSIG`` plus EOF on its stdin, a pipe this
  process holds (both set up by ``snakepit.worker``'s parent watch);
* it serves gRPC on TCP at the Dask worker's own host address (never 0.0.0.0), a port the
  OS picks, reported back in its ready line;
* it reads the pool's secret from an owner-only file in a private directory (0700) of this
  plugin — the secret came here inside the pickled plugin, over Dask's comms, and never
  appears in an argv or an environment;
* it holds a lease (``--lease``): it exits when the manager stops renewing.

Retirement: when Dask closes the worker gracefully (``retire_workers``, ``scale`` down,
``Adaptive``), :meth:`SnakepitPlugin.teardown` runs first; it marks the plugin draining
(the manager sees that in its status poll and stops routing to these workers), asks each
worker to finish what it holds (``Shutdown`` with ``drain_timeout`` of grace), waits for
them, and kills what is left after the bound.
"""
from __future__ import annotations

import asyncio
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

SECRET_METADATA_KEY = "snakepit-secret"


def _address_host(address: str) -> str:
    """The host part of a Dask address (``tcp://10.0.0.5:40123`` → ``10.0.0.5``)."""
    rest = address.split("://", 1)[-1]
    if rest.startswith("["):
        return rest[1: rest.index("]")]
    return rest.rsplit(":", 1)[0]


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Child:
    def __init__(self, worker_id: str, proc: subprocess.Popen, ready_r: int) -> None:
        self.worker_id = worker_id
        self.proc = proc
        self.ready_r = ready_r
        self.port = 0
        self.code: int | None = None

    def poll(self) -> int | None:
        if self.code is None:
            self.code = self.proc.poll()
        return self.code


class SnakepitPlugin(WorkerPlugin):
    """Hosts one pool's snakepit workers on a Dask worker (see the module docstring)."""

    def __init__(self, name: str, secret: bytes, drain_timeout: float, lease: float) -> None:
        self.name = name
        self.secret = secret
        self.drain_timeout = float(drain_timeout)
        self.lease = float(lease)
        self._state: dict[str, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "secret": self.secret, "drain_timeout": self.drain_timeout,
                "lease": self.lease, "_state": None}

    # -- Dask's hooks ----------------------------------------------------------------
    def setup(self, worker: Any) -> None:
        self.worker = worker
        self.dir = tempfile.mkdtemp(prefix="snakepit-dask-")  # 0700
        self.secret_file = os.path.join(self.dir, "secret")
        fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(self.secret)
        self.host = _address_host(worker.address)
        self.hostname = socket.gethostname()
        self.children: dict[str, _Child] = {}
        self.lock = threading.Lock()
        self.draining = False
        self.closed = False
        # PR_SET_PDEATHSIG fires when the *thread* that forked the child ends: children are
        # spawned from this one long-lived thread.
        self.spawner = ThreadPoolExecutor(1, thread_name_prefix="snakepit-dask-spawner")
        self.tls = self._tls_files(worker)

    def _tls_files(self, worker: Any) -> dict[str, str] | None:
        """The Dask worker's own TLS certificate, key and CA as files (for the snakepit server),
        when the Dask worker talks TLS."""
        security = getattr(worker, "security", None)
        if security is None or not str(worker.address).startswith("tls://"):
            return None
        cert, key, ca = security.tls_worker_cert, security.tls_worker_key, security.tls_ca_file
        if not cert:
            return None
        out = {}
        for label, value in (("cert", cert), ("key", key or cert), ("ca", ca)):
            if not value:
                continue
            if "-----BEGIN" in value:  # Security.temporary() and friends hold PEM contents
                path = os.path.join(self.dir, f"tls-{label}.pem")
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(value)
                value = path
            out[label] = value
        return out

    async def teardown(self, worker: Any) -> None:
        """Dask is closing this worker (retirement, scale-down, shutdown): drain, then stop."""
        self.draining = True
        live = [c for c in list(self.children.values()) if c.poll() is None]
        if live:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self._shutdown_rpcs, live, self.drain_timeout)
            deadline = time.monotonic() + self.drain_timeout + 1.0
            while time.monotonic() < deadline and any(c.poll() is None for c in live):
                await asyncio.sleep(0.05)
            await self._stop([c.worker_id for c in live], 1.0)
        self.closed = True
        self.spawner.shutdown(wait=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _shutdown_rpcs(self, children: list[_Child], grace: float) -> None:
        """Ask each worker to finish what it holds and exit (``Shutdown``, with the secret)."""
        import grpc

        from ...protocol import worker_pb2 as pb
        from ...protocol import worker_pb2_grpc as pb_grpc

        creds = self._client_credentials()
        for child in children:
            if child.poll() is not None or not child.port:
                continue
            target = _join(self.host, child.port)
            try:
                if creds is None:
                    channel = grpc.insecure_channel(target)
                else:
                    channel = grpc.secure_channel(target, creds[0], options=creds[1])
                with channel:
                    pb_grpc.WorkerStub(channel).Shutdown(
                        pb.ShutdownRequest(grace_s=grace), timeout=2.0,
                        metadata=((SECRET_METADATA_KEY, self.secret.decode()),))
            except Exception:  # noqa: BLE001 - it is stopped by a signal below
                pass

    def _client_credentials(self) -> tuple[Any, list] | None:
        if not self.tls:
            return None
        import grpc

        def read(path: str | None) -> bytes | None:
            if not path:
                return None
            with open(path, "rb") as fh:
                return fh.read()

        creds = grpc.ssl_channel_credentials(read(self.tls.get("ca")), read(self.tls.get("key")),
                                             read(self.tls.get("cert")))
        name = tls_name(read(self.tls["cert"]) or b"")
        return creds, ([("grpc.ssl_target_name_override", name)] if name else [])

    # -- what the manager asks (through Client.run) ------------------------------------
    def spawn(self, spec: dict[str, Any]) -> _Child:
        """(spawner thread) Start one snakepit worker; it reports on its ready pipe."""
        worker_id = spec["worker_id"]
        ready_r, ready_w = os.pipe()
        argv = [
            sys.executable, "-m", "snakepit.worker",
            "--listen", _join(self.host, 0),
            "--worker-id", worker_id,
            "--adapter", spec["adapter"],
            "--profile", spec["profile"],
            "--capacity", str(spec["capacity"]),
            "--max-message-bytes", str(spec["max_message_bytes"]),
            "--ready-fd", str(ready_w),
            "--parent-pid", str(os.getpid()),
            "--secret-file", self.secret_file,
            "--lease", str(self.lease),
            "--lease-first", str(self.lease + float(spec.get("startup_timeout", 30.0))),
        ]
        if spec.get("adapter_options"):
            path = os.path.join(self.dir, f"opts-{worker_id}")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(spec["adapter_options"])
            argv += ["--options-file", path]
        if self.tls:
            argv += ["--tls-cert", self.tls["cert"], "--tls-key", self.tls.get("key", self.tls["cert"])]
            if self.tls.get("ca"):
                argv += ["--tls-ca", self.tls["ca"]]
        env = dict(os.environ)
        env.update(spec.get("env") or {})
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, pass_fds=(ready_w,), env=env,
                                    cwd=spec.get("cwd") or None, start_new_session=True, close_fds=True)
        except BaseException:
            os.close(ready_r)
            raise
        finally:
            os.close(ready_w)
        child = _Child(worker_id, proc, ready_r)
        with self.lock:
            self.children[worker_id] = child
        return child

    def wait_ready(self, children: list[_Child], timeout: float) -> list[dict[str, Any]]:
        """(a helper thread) Read each child's ready line; a child that fails is killed."""
        deadline = time.monotonic() + timeout
        buffers = {c.ready_r: b"" for c in children}
        reports: dict[int, dict[str, Any]] = {}
        open_fds = set(buffers)
        while open_fds:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            readable, _, _ = select.select(list(open_fds), [], [], min(left, 0.5))
            for fd in readable:
                data = os.read(fd, 65536)
                if data:
                    buffers[fd] += data
                    if b"\n" not in buffers[fd]:
                        continue
                open_fds.discard(fd)
                line = buffers[fd].split(b"\n", 1)[0]
                try:
                    reports[fd] = json.loads(line) if line else {"ok": False, "error": "exited before ready"}
                except ValueError:
                    reports[fd] = {"ok": False, "error": f"bad ready line {line[:200]!r}"}
        out = []
        for child in children:
            os.close(child.ready_r)
            report = reports.get(child.ready_r)
            if report is None:
                report = {"ok": False, "error": f"not ready after {timeout:g}s"}
            if report.get("ok"):
                child.port = int(report.get("port") or 0)
                out.append({"worker_id": child.worker_id, "ok": True, "pid": child.proc.pid,
                            "port": child.port, "host": self.host, "hostname": self.hostname,
                            "address": _join(self.host, child.port)})
            else:
                code = child.poll()
                error = str(report.get("error", "unknown error"))
                if code is not None and "exited before ready" in error:
                    error = f"exited with code {code} before it was ready"
                out.append({"worker_id": child.worker_id, "ok": False, "error": error,
                            "traceback": report.get("traceback", "")})
                self._kill(child)
        return out

    def _kill(self, child: _Child) -> None:
        if child.poll() is None:
            try:
                child.proc.kill()
            except OSError:
                pass
            try:
                child.proc.wait(5.0)
            except subprocess.TimeoutExpired:
                pass
        child.poll()
        self._close_stdin(child)

    @staticmethod
    def _close_stdin(child: _Child) -> None:
        try:
            if child.proc.stdin is not None:
                child.proc.stdin.close()
        except OSError:
            pass

    def status(self, worker_ids: list[str]) -> dict[str, Any]:
        codes: dict[str, Any] = {}
        for wid in worker_ids:
            child = self.children.get(wid)
            if child is None:
                codes[wid] = "unknown"
                continue
            code = child.poll()
            codes[wid] = code
            if code is not None:
                self._close_stdin(child)
        return {"codes": codes, "draining": self.draining}

    def signal(self, worker_id: str, sig: int) -> bool:
        child = self.children.get(worker_id)
        if child is None or child.poll() is not None:
            return False
        try:
            child.proc.send_signal(sig)
        except OSError:
            return False
        return True

    async def _stop(self, worker_ids: list[str], grace: float) -> dict[str, int | None]:
        """SIGTERM (the worker stops serving and exits), then SIGKILL after ``grace``."""
        children = [c for c in (self.children.get(w) for w in worker_ids) if c is not None]
        for child in children:
            if child.poll() is None:
                self.signal(child.worker_id, signal.SIGTERM)
        for budget, sig in ((grace, signal.SIGKILL), (5.0, None)):
            deadline = time.monotonic() + budget
            while time.monotonic() < deadline and any(c.poll() is None for c in children):
                await asyncio.sleep(0.02)
            if sig is not None:
                for child in children:
                    if child.poll() is None:
                        self.signal(child.worker_id, sig)
        out = {}
        for child in children:
            out[child.worker_id] = child.poll()
            if child.code is not None:
                self._close_stdin(child)
                with self.lock:
                    self.children.pop(child.worker_id, None)
        return out


def tls_name(cert_pem: bytes) -> str:
    """A name the certificate is issued to (first DNS SAN, else its CN), for gRPC's
    ``ssl_target_name_override``: Dask's own TLS checks the chain, not the host name, and the
    snakepit channels trust the same way."""
    try:
        from cryptography import x509
        from cryptography.x509.oid import NameOID
    except ImportError:
        return ""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except Exception:  # noqa: BLE001
        return ""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
        if names:
            return names[0]
    except Exception:  # noqa: BLE001
        pass
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else ""


# -- the functions the manager runs on Dask workers (Client.run injects dask_worker) -------
def _plugin(dask_worker: Any, name: str) -> SnakepitPlugin:
    plugin = dask_worker.plugins.get(name)
    if plugin is None:
        raise RuntimeError(f"the snakepit plugin {name!r} is not set up on Dask worker {dask_worker.address}")
    return plugin


async def remote_start(name: str, assignment: dict[str, list[dict[str, Any]]], timeout: float,
                       dask_worker: Any = None) -> list[dict[str, Any]]:
    """Start this Dask worker's share of ``assignment`` (keyed by Dask worker address)."""
    specs = assignment.get(dask_worker.address, [])
    if not specs:
        return []
    plugin = _plugin(dask_worker, name)
    if plugin.draining or plugin.closed:
        return [{"worker_id": s["worker_id"], "ok": False, "error": "Dask worker is closing"} for s in specs]
    loop = asyncio.get_running_loop()
    children: list[_Child] = []
    out: list[dict[str, Any]] = []
    for spec in specs:
        try:
            children.append(await loop.run_in_executor(plugin.spawner, plugin.spawn, spec))
        except Exception as exc:  # noqa: BLE001
            out.append({"worker_id": spec["worker_id"], "ok": False,
                        "error": f"cannot start {sys.executable} -m snakepit.worker: {exc}"})
    if children:
        out += await loop.run_in_executor(None, plugin.wait_ready, children, timeout)
    return out


def remote_status(name: str, worker_ids: list[str], dask_worker: Any = None) -> dict[str, Any]:
    plugin = dask_worker.plugins.get(name)
    if plugin is None:
        return {"codes": {w: "unknown" for w in worker_ids}, "draining": True}
    return plugin.status(worker_ids)


def remote_signal(name: str, worker_id: str, sig: int, dask_worker: Any = None) -> bool:
    plugin = dask_worker.plugins.get(name)
    return plugin.signal(worker_id, sig) if plugin is not None else False


async def remote_stop(name: str, worker_ids: list[str], grace: float, dask_worker: Any = None) -> dict[str, Any]:
    plugin = dask_worker.plugins.get(name)
    if plugin is None:
        return {}
    return await plugin._stop(worker_ids, grace)
