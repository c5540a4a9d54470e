"""The public names of the contract exist, and importing snakepit stays light."""
from __future__ import annotations

import subprocess
import sys

import snakepit


def test_all_is_sorted_and_exported():
    assert snakepit.__all__ == sorted(snakepit.__all__)
    for name in snakepit.__all__:
        assert hasattr(snakepit, name), name


def test_contract_names():
    for name in ["start_pool", "get_pool", "list_pools", "stop_pool", "shutdown", "PoolConfig", "Adapter",
                 "command", "SnakepitError", "PoolNotFoundError", "PoolSaturatedError", "QueueTimeoutError",
                 "RequestTimeoutError", "WorkerCrashedError", "RemoteError", "ConfigError"]:
        assert hasattr(snakepit, name), name
    for name in ["PoolNotFoundError", "PoolSaturatedError", "QueueTimeoutError", "RequestTimeoutError",
                 "WorkerCrashedError", "RemoteError", "ConfigError"]:
        assert issubclass(getattr(snakepit, name), snakepit.SnakepitError)
    for name in ["attach", "attach_many", "detach", "execute"]:
        assert callable(getattr(snakepit.telemetry, name))
    for name in ["execute", "execute_stream", "submit", "map", "session", "run_code", "list_workers",
                 "recycle_worker", "execute_async"]:
        assert callable(getattr(snakepit.Pool, name)), name
    for name in ["execute", "execute_stream", "submit", "map", "run_code"]:
        assert callable(getattr(snakepit.Session, name)), name


def test_import_is_light_and_has_no_jupyter():
    code = ("import sys, snakepit; heavy = [m for m in ('IPython', 'ipywidgets', 'pandas', 'plotly', 'snakepit_nb', 'joblib', 'tqdm', 'sklearn', 'distributed')"
            " if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_import_does_not_load_the_manager_side():
    # Workers (and the forkserver zygote) import the package too: `import snakepit` is lazy
    # (PEP 562) and must not pull in the pool, the gRPC client or the launcher.
    code = ("import sys, snakepit; print(sorted(m for m in sys.modules if m.startswith(('snakepit.', 'grpc',"
            " 'google.protobuf', 'cloudpickle'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_lazy_names_resolve_to_their_definitions():
    code = ("import snakepit; from snakepit import start_pool, Pool, PoolConfig, telemetry, WorkerCrashedError;"
            " import snakepit.api, snakepit.pool, snakepit.config, snakepit.errors;"
            " assert Pool is snakepit.pool.Pool;"
            " assert PoolConfig is snakepit.config.PoolConfig and telemetry is snakepit.telemetry;"
            " assert WorkerCrashedError is snakepit.errors.WorkerCrashedError;"
            " ns = {}; exec('from snakepit import *', ns); assert set(snakepit.__all__) <= set(ns);"
            " assert set(snakepit.__all__) <= set(dir(snakepit)); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "ok"
    try:
        snakepit.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("unknown attribute did not raise")


def test_start_pool_keeps_the_api_signature_and_doc():
    # snakepit.start_pool starts the forkserver zygote before importing the manager side,
    # then calls snakepit.api.start_pool: same signature, same documentation.
    import inspect

    import snakepit.api

    assert inspect.signature(snakepit.start_pool) == inspect.signature(snakepit.api.start_pool)
    assert snakepit.start_pool.__doc__ == snakepit.api.start_pool.__doc__
