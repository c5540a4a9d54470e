"""The live panel in a real browser: JupyterLab on loopback + headless Debian Chromium (Playwright).

The test starts JupyterLab with a token, opens a notebook that shows ``snakepit_nb.Panel``
while a background loop keeps the pool busy, waits for the gauge and the worker table to
render, checks that the chart changes between two looks, and saves a screenshot to
``test-artifacts/panel.png``. Everything it started (server, kernel, workers, chromium) is
gone at the end.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACTS = os.path.join(REPO, "test-artifacts")
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium at /usr/bin/chromium"),
]

NOTEBOOK_CELLS = [
    "import threading, time\n"
    "import snakepit, snakepit_nb\n"
    "pool = snakepit.start_pool('default', profile='process', pool_size=3, history_interval=0.5)\n"
    "def keep_busy(stop):\n"
    "    i = 0\n"
    "    while not stop.is_set() and not pool.closed:\n"
    "        n = 1 + i % 3          # 1, 2, 3 of 3 workers busy: the gauge moves\n"
    "        try:\n"
    "            for f in [pool.submit(time.sleep, 0.8) for _ in range(n)]:\n"
    "                f.result()\n"
    "        except Exception:\n"
    "            return\n"
    "        i += 1\n"
    "stop = threading.Event()\n"
    "threading.Thread(target=keep_busy, args=(stop,), name='load', daemon=True).start()",
    "panel = snakepit_nb.Panel(interval=0.5)\npanel",
    "%load_ext snakepit_nb\n%snakepit_inspect --detailed --recommendations",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, token: str, method: str = "GET", timeout: float = 5.0):
    req = urllib.request.Request(url, method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body = resp.read()
        return json.loads(body) if body else None


@pytest.fixture
def lab(tmp_path):
    import nbformat

    root = tmp_path / "root"
    root.mkdir()
    nb = nbformat.v4.new_notebook(
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}},
        cells=[nbformat.v4.new_code_cell(src) for src in NOTEBOOK_CELLS])
    nbformat.write(nb, str(root / "panel.ipynb"))
    env = dict(os.environ)
    for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                     ("JUPYTERLAB_SETTINGS_DIR", "settings"), ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
                     ("IPYTHONDIR", "ipython")):
        path = tmp_path / sub
        path.mkdir()
        env[var] = str(path)
    news = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    port, token = _free_port(), secrets.token_hex(16)
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--LabApp.expose_app_in_browser=True"],
        env=env, stdout=open(tmp_path / "server.log", "wb"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    descendants: set[int] = set()
    try:
        deadline = time.monotonic() + 90
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"jupyterlab exited: {(tmp_path / 'server.log').read_text()[-2000:]}")
            try:
                _request(f"{base}/api/status", token)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield {"base": base, "token": token, "server": server, "tmp": tmp_path, "descendants": descendants}
    finally:
        try:
            for s in _request(f"{base}/api/sessions", token) or []:
                _request(f"{base}/api/sessions/{s['id']}", token, method="DELETE", timeout=30)
        except OSError:
            pass
        try:
            descendants.update(p.pid for p in psutil.Process(server.pid).children(recursive=True))
        except psutil.Error:
            pass
        try:
            _request(f"{base}/api/shutdown", token, method="POST", timeout=30)
        except OSError:
            pass
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
        end = time.monotonic() + 30
        while time.monotonic() < end and any(psutil.pid_exists(pid) and _alive(pid) for pid in descendants):
            time.sleep(0.2)
        left = [pid for pid in descendants if psutil.pid_exists(pid) and _alive(pid)]
        assert not left, f"processes left behind by the server: {left}"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_panel_renders_and_updates_in_chromium(lab):
    from playwright.sync_api import sync_playwright

    os.makedirs(ARTIFACTS, exist_ok=True)
    profile = lab["tmp"] / "chromium-profile"
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 1400})
        browser_pids: set[int] = set()
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(120_000)
            page.goto(f"{lab['base']}/lab/tree/panel.ipynb?token={lab['token']}")
            page.wait_for_function("() => window.jupyterapp !== undefined")
            # The execution indicator says idle before a kernel exists: wait for the kernel itself.
            page.wait_for_function(
                "() => { const w = window.jupyterapp.shell.currentWidget;"
                " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
                " return !!k && k.status === 'idle'; }")
            for child in psutil.Process(lab["server"].pid).children(recursive=True):
                lab["descendants"].add(child.pid)
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")

            gauge = page.locator(".widget-hprogress").first
            gauge.wait_for(state="visible")
            table = page.locator(".widget-html table.snakepit-workers").first
            table.wait_for(state="visible")
            page.wait_for_function(
                "() => { const t = document.querySelector('.widget-html table.snakepit-workers');"
                " return !!t && t.querySelectorAll('tbody tr').length === 3; }")
            plot = page.locator(".js-plotly-plot").first
            plot.wait_for(state="visible")
            for child in psutil.Process(lab["server"].pid).children(recursive=True):
                lab["descendants"].add(child.pid)

            def look() -> dict:
                return page.evaluate(
                    """() => ({
                        gauge: document.querySelector('.widget-hprogress .progress-bar').style.width,
                        table: document.querySelector('.widget-html table.snakepit-workers').innerText,
                        traces: Array.from(document.querySelectorAll('.js-plotly-plot .scatterlayer path.js-line'))
                                     .map(p => p.getAttribute('d')).join('|'),
                    })""")

            # The chart fills in as the panel refreshes; the gauge moves with the load.
            page.wait_for_function(
                "() => document.querySelectorAll('.js-plotly-plot .scatterlayer path.js-line').length >= 2")
            first = look()
            deadline = time.monotonic() + 60
            second = look()
            while second["traces"] == first["traces"] and time.monotonic() < deadline:
                page.wait_for_timeout(500)
                second = look()
            assert second["traces"] != first["traces"], "the chart did not change between two looks"
            widths = {first["gauge"], second["gauge"]}
            deadline = time.monotonic() + 60
            while len(widths) < 2 and time.monotonic() < deadline:
                page.wait_for_timeout(300)
                widths.add(look()["gauge"])
            assert len(widths) >= 2, f"the gauge never moved: {widths}"
            assert "default-w1" in second["table"] and "/ 1" in second["table"]

            inspect_card = page.locator(".snakepit-inspect").last
            inspect_card.wait_for(state="visible")
            inspect_card.scroll_into_view_if_needed()
            inspect_card.screenshot(path=os.path.join(ARTIFACTS, "inspect.png"))
            output = page.locator(".jp-OutputArea-output", has=page.locator(".widget-hprogress")).first
            output.scroll_into_view_if_needed()
            page.wait_for_timeout(1500)
            output.screenshot(path=os.path.join(ARTIFACTS, "panel.png"))
            page.screenshot(path=os.path.join(ARTIFACTS, "panel-page.png"), full_page=False)
            assert os.path.getsize(os.path.join(ARTIFACTS, "panel.png")) > 10_000
            # Stop the notebook's load loop and the panel before the kernel goes.
            page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
                          ".requestExecute({code: 'stop.set(); panel.close(); snakepit.shutdown()'}).done")
        finally:
            try:
                browser_pids = {c.pid for c in psutil.Process().children(recursive=True)
                                if "chrom" in c.name().lower() or "node" in c.name().lower()}
            except psutil.Error:
                pass
            context.close()
    end = time.monotonic() + 30
    while time.monotonic() < end and any(_alive(pid) for pid in browser_pids):
        time.sleep(0.2)
    assert not [pid for pid in browser_pids if _alive(pid)], "chromium / playwright driver left running"
    shutil.rmtree(profile, ignore_errors=True)
