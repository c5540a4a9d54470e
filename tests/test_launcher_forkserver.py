"""Start methods: forkserver (the default) forks workers from a zygote; spawn stays selectable;
what a zygote cannot serve is spawned. Real processes throughout."""
from __future__ import annotations

import os
import signal
import site
import subprocess
import sysconfig
import sys
import textwrap
import time

import psutil
import pytest

import snakepit
from snakepit import launcher as launcher_mod
from snakepit.launcher import Launcher, default_start_method, forkserver_available

pytestmark = pytest.mark.skipif(not forkserver_available(), reason="forkserver needs Linux pidfd/SCM_RIGHTS")


def _parents(pool) -> set[int]:
    return {psutil.Process(w.pid).ppid() for w in pool.list_workers()}


def _zygote_of(pool) -> psutil.Process:
    (ppid,) = _parents(pool)
    return psutil.Process(ppid)


# Run in the workers with run_code: submitting a function of this module would import the
# module (and what it imports) there.
SYS_PATH = "import sys; list(sys.path)"
PREFIX_AND_FLAGS = "import sys; (sys.prefix, sys.flags.optimize, hash('snakepit'))"


def test_forkserver_is_the_default(monkeypatch):
    monkeypatch.delenv("SNAKEPIT_START_METHOD", raising=False)
    assert default_start_method() == "forkserver"
    pool = snakepit.start_pool("t-default-method", pool_size=2)
    try:
        zygote = _zygote_of(pool)
        assert "--zygote" in zygote.cmdline()
        assert zygote.ppid() == os.getpid()
        for w in pool.list_workers():  # a forked worker shows its own command line
            cmd = psutil.Process(w.pid).cmdline()
            assert cmd[1:3] == ["-m", "snakepit.worker"] and "--socket" in cmd and "--zygote" not in cmd
        assert pool.execute("echo", {"x": 1}) == {"x": 1}
    finally:
        pool.stop()
    # the zygote exits with its last worker
    assert psutil.wait_procs([zygote], timeout=10)[1] == []


@pytest.mark.parametrize("how", ["config", "env"])
def test_spawn_stays_selectable(monkeypatch, how):
    if how == "env":
        monkeypatch.setenv("SNAKEPIT_START_METHOD", "spawn")
        assert default_start_method() == "spawn"
        pool = snakepit.start_pool("t-spawn", pool_size=2)
    else:
        monkeypatch.delenv("SNAKEPIT_START_METHOD", raising=False)
        pool = snakepit.start_pool("t-spawn", pool_size=2, start_method="spawn")
    try:
        assert _parents(pool) == {os.getpid()}
        assert pool.execute("echo", {"x": 2}) == {"x": 2}
    finally:
        pool.stop()


def test_the_zygote_holds_only_the_worker_side():
    pool = snakepit.start_pool("t-zygote-imports", pool_size=1, start_method="forkserver")
    try:
        assert "--zygote" in _zygote_of(pool).cmdline()
        names = ["snakepit.pool", "snakepit.api", "snakepit.connection", "snakepit.launcher", "grpc",
                 "snakepit.worker.server"]
        seen = pool.run_code("import sys; {n: n in sys.modules for n in names}", push={"names": names}).result
        assert seen == {"snakepit.pool": False, "snakepit.api": False, "snakepit.connection": False,
                        "snakepit.launcher": False, "grpc": True, "snakepit.worker.server": True}
    finally:
        pool.stop()


def test_wrapper_script_is_spawned(tmp_path):
    wrapper = tmp_path / "python-wrapper"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    pool = snakepit.start_pool("t-wrapper", pool_size=1, python=str(wrapper), start_method="forkserver")
    try:
        assert _parents(pool) == {os.getpid()}
        assert pool.execute("echo", {"x": 3}) == {"x": 3}
    finally:
        pool.stop()


def _inherit_site_packages(python) -> None:
    """Give a new venv this environment's packages, whatever this environment is (system
    Python, a venv, a conda env): ``--system-site-packages`` would only reach the *base*
    interpreter's, which lack grpc when the tests run from a venv. ``site.addsitedir`` also
    runs those directories' .pth files (editable installs)."""
    ours = [d for d in {*site.getsitepackages(), site.getusersitepackages(),
                        sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
            if os.path.isdir(d)]
    theirs = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(theirs, "_snakepit_test_parent_env.pth"), "w") as fh:
        fh.write("import site; " + "; ".join(f"site.addsitedir({d!r})" for d in sorted(ours)) + "\n")


def test_other_venv_is_spawned(tmp_path):
    # A venv's python is a symlink to this very interpreter binary, but it is another
    # environment (sys.prefix, site-packages): a fork of our zygote would be the wrong one.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    _inherit_site_packages(python)
    assert os.path.samefile(python, sys.executable) or os.path.realpath(python) != os.path.realpath(sys.executable)
    pool = snakepit.start_pool("t-venv", pool_size=1, python=str(python), start_method="forkserver")
    try:
        assert _parents(pool) == {os.getpid()}
        prefix, _, _ = pool.run_code(PREFIX_AND_FLAGS).result
        assert os.path.realpath(prefix) == os.path.realpath(venv)
    finally:
        pool.stop()


def test_interpreter_environment_gets_its_own_zygote():
    a = snakepit.start_pool("t-env-a", pool_size=1, start_method="forkserver")
    b = snakepit.start_pool("t-env-b", pool_size=1, start_method="forkserver",
                            env={"PYTHONHASHSEED": "0", "PYTHONOPTIMIZE": "1"})
    try:
        za, zb = _zygote_of(a), _zygote_of(b)
        assert za.pid != zb.pid and "--zygote" in zb.cmdline()
        expected = subprocess.run([sys.executable, "-c", "import sys; print(sys.flags.optimize, hash('snakepit'))"],
                                  env={**os.environ, "PYTHONHASHSEED": "0", "PYTHONOPTIMIZE": "1"},
                                  capture_output=True, text=True, check=True).stdout.split()
        _, optimize, h = b.run_code(PREFIX_AND_FLAGS).result
        assert [str(optimize), str(h)] == expected
        assert a.run_code(PREFIX_AND_FLAGS).result[1] == sys.flags.optimize
    finally:
        a.stop()
        b.stop()


def test_sys_path_is_the_one_a_spawned_worker_gets(tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    paths = {}
    for method in ("spawn", "forkserver"):
        pool = snakepit.start_pool(f"t-path-{method}", pool_size=1, start_method=method,
                                   env={"PYTHONPATH": str(extra)})
        try:
            paths[method] = pool.run_code(SYS_PATH).result
        finally:
            pool.stop()
    assert str(extra) in paths["spawn"]
    assert paths["forkserver"] == paths["spawn"]
    # A second pool on the same zygote does not inherit the first one's PYTHONPATH, but keeps
    # the interpreter's own paths even when the first one's repeated them.
    site_packages = next(p for p in sys.path if p.endswith("site-packages"))
    first = snakepit.start_pool("t-path-1", pool_size=1, start_method="forkserver",
                                env={"PYTHONPATH": os.pathsep.join([str(extra), site_packages])})
    second = snakepit.start_pool("t-path-2", pool_size=1, start_method="forkserver")
    try:
        assert _zygote_of(first).pid == _zygote_of(second).pid
        assert str(extra) in first.run_code(SYS_PATH).result
        second_path = second.run_code(SYS_PATH).result
        assert str(extra) not in second_path and site_packages in second_path
    finally:
        first.stop()
        second.stop()


def _worker_argv(tmp_path, name: str) -> list[str]:
    return [sys.executable, "-m", "snakepit.worker", "--socket", str(tmp_path / f"{name}.sock"),
            "--worker-id", name, "--adapter", "snakepit.worker.builtin:DefaultAdapter"]


def test_forked_worker_reports_its_exit_code(tmp_path):
    launcher = launcher_mod.default_launcher()
    env = dict(os.environ)
    procs = [launcher.start(_worker_argv(tmp_path, f"w{i}"), env=env, cwd=None, start_method="forkserver")
             for i in range(2)]
    try:
        assert all(p.start_method == "forkserver" for p in procs)
        reports = Launcher.wait_ready(procs, 30)
        assert all(r.get("ok") for r in reports.values()), reports
        codes: list[int] = []
        procs[0].add_exit_callback(codes.append)
        procs[0].signal(signal.SIGKILL)
        assert procs[0].wait(10) == -signal.SIGKILL
        assert codes == [-signal.SIGKILL]
        assert procs[1].stop(2.0) == 0  # parent-alive pipe closed: a clean exit
    finally:
        for p in procs:
            p.kill()
            p.wait(5)


PRESTART = textwrap.dedent("""
    import sys, time, psutil, snakepit
    me = psutil.Process()
    try:
        snakepit.start_pool("bad", pool_size=2, start_method="forkserver", adapter_options={"f": lambda: 0})
    except snakepit.ConfigError:
        pass
    end = time.monotonic() + 10
    while me.children(recursive=True) and time.monotonic() < end:
        time.sleep(0.05)
    left = [" ".join(c.cmdline()) for c in me.children(recursive=True)]
    pool = snakepit.start_pool("good", pool_size=2, start_method="forkserver")
    zygotes = {psutil.Process(w.pid).ppid() for w in pool.list_workers()}
    kids = [c.pid for c in me.children()]
    assert "snakepit.admin" in sys.modules  # imported while the zygote started
    print(left, len(zygotes), zygotes == set(kids), flush=True)
""")


def test_first_start_pool_prestarts_the_zygote_and_never_leaves_it_idle():
    # A fresh manager: its first start_pool starts the zygote while importing the pool side.
    # A pool that fails before launching any worker must not leave that zygote behind.
    out = subprocess.run([sys.executable, "-c", PRESTART], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[] 1 True", out.stdout + out.stderr


def test_forked_worker_environment_is_exactly_the_pools():
    # Workers of two pools share a zygote (started with the first pool's environment); each
    # worker's environment is its own pool's, variables removed and changed included.
    first = snakepit.start_pool("t-env-1", pool_size=1, start_method="forkserver",
                                env={"SNAKEPIT_T_ONLY_FIRST": "1", "SNAKEPIT_T_BOTH": "first"})
    second = snakepit.start_pool("t-env-2", pool_size=1, start_method="forkserver",
                                 env={"SNAKEPIT_T_BOTH": "second"})
    code = "import os; dict(os.environ)"
    try:
        assert _zygote_of(first).pid == _zygote_of(second).pid
        env1, env2 = first.run_code(code).result, second.run_code(code).result
        assert env1["SNAKEPIT_T_ONLY_FIRST"] == "1" and env1["SNAKEPIT_T_BOTH"] == "first"
        assert "SNAKEPIT_T_ONLY_FIRST" not in env2 and env2["SNAKEPIT_T_BOTH"] == "second"
        # what the C library sees too (subprocesses inherit it)
        out = second.run_code("import subprocess; subprocess.run(['sh', '-c', 'echo $SNAKEPIT_T_BOTH"
                              ":${SNAKEPIT_T_ONLY_FIRST-unset}'], capture_output=True, text=True).stdout").result
        assert out.strip() == "second:unset"
    finally:
        first.stop()
        second.stop()


def _maps(proc: psutil.Process) -> str:
    return "\n".join(m.path for m in proc.memory_maps())


def test_preload_is_imported_once_by_the_zygote_and_is_part_of_its_identity():
    plain = snakepit.start_pool("t-preload-none", pool_size=1)
    preloaded = snakepit.start_pool("t-preload", pool_size=2, preload=["decimal"])
    try:
        plain_zygote, zygote = _zygote_of(plain), _zygote_of(preloaded)
        assert plain_zygote.pid != zygote.pid  # another preload, another template process
        # The C extension behind `decimal` is mapped by the template itself: imported before
        # the fork, so its pages are shared by the workers.
        assert "_decimal" in _maps(zygote) and "_decimal" not in _maps(plain_zygote)
        for w in preloaded.list_workers():
            assert "_decimal" in _maps(psutil.Process(w.pid))
        assert preloaded.run_code("import sys; 'decimal' in sys.modules").result is True
    finally:
        snakepit.shutdown()


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_a_preload_that_cannot_be_imported_fails_the_start_clearly(method):
    with pytest.raises(snakepit.WorkerStartError, match="cannot preload module 'no_such_module_xyz'"):
        snakepit.start_pool(f"t-preload-bad-{method}", pool_size=1, start_method=method,
                            preload=["no_such_module_xyz"], startup_timeout=20)
    assert "t-preload-bad-" + method not in snakepit.list_pools()
    good = snakepit.start_pool(f"t-preload-ok-{method}", pool_size=1, start_method=method, preload=["decimal"])
    try:
        assert good.execute("echo", {"x": 1}) == {"x": 1}
    finally:
        snakepit.shutdown()


def test_the_first_start_pool_prestarts_the_zygote_its_preload_needs():
    # The first start_pool of a process starts the zygote before importing the manager side;
    # with preload= that must be the zygote the pool then uses, not a second one.
    code = textwrap.dedent("""
        import snakepit.launcher as L
        started = []
        original = L._Zygote.__init__
        def counting(self, *args, **kwargs):
            started.append(1)
            original(self, *args, **kwargs)
        L._Zygote.__init__ = counting
        import snakepit
        pool = snakepit.start_pool("t-prestart-preload", pool_size=2, preload=["decimal"])
        pool.execute("echo", {})
        pool.stop()
        print("zygotes", len(started))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    env.pop("SNAKEPIT_START_METHOD", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert "zygotes 1" in out.stdout
