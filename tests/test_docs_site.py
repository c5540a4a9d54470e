"""The docs site builds with ``mkdocs build --strict``: a broken link, a missing page or an
API name the reference cannot resolve fails the build (and this test)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings")
pytest.importorskip("material")
pytest.importorskip("mkdocs_jupyter")


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config),
                           "-d", str(site)], cwd=config.parent, env=env, capture_output=True, text=True,
                          timeout=240)


def copy_of_site(tmp_path: Path) -> Path:
    """mkdocs.yml and docs/ copied (notebooks resolved), the API still read from this checkout."""
    shutil.copytree(REPO / "docs", tmp_path / "docs", symlinks=False)
    text = (REPO / "mkdocs.yml").read_text().replace("paths: [.]", f"paths: [{REPO}]")
    (tmp_path / "mkdocs.yml").write_text(text)
    return tmp_path / "mkdocs.yml"


def test_site_builds_strict(tmp_path):
    proc = build(REPO / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    site = tmp_path / "site"
    for page in ("guides/configurations/index.html", "guides/tuning/index.html",
                 "guides/migration-process-to-thread/index.html", "reference/api/index.html",
                 "notebooks/04-capacity-planning-worksheet/index.html", "performance/index.html"):
        assert (site / page).is_file(), page
    api = (site / "reference/api/index.html").read_text()
    for name in ("start_pool", "PoolConfig", "Pool", "PoolSaturatedError", "attach", "compare_profiles",
                 "ProfileInspector"):
        assert name in api, name


def test_broken_link_fails(tmp_path):
    config = copy_of_site(tmp_path)
    guide = tmp_path / "docs" / "guides" / "tuning.md"
    guide.write_text(guide.read_text() + "\nSee [nowhere](no-such-page.md).\n")
    proc = build(config, tmp_path / "site")
    assert proc.returncode != 0
    assert "no-such-page.md" in proc.stdout + proc.stderr


def test_missing_reference_fails(tmp_path):
    config = copy_of_site(tmp_path)
    api = tmp_path / "docs" / "reference" / "api.md"
    api.write_text(api.read_text() + "\n::: snakepit.no_such_name\n")
    proc = build(config, tmp_path / "site")
    assert proc.returncode != 0
