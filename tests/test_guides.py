"""Every ```python block of docs/guides/*.md runs: a guide's blocks in order, in a fresh
interpreter per guide, as a reader pasting them would (one namespace, ``__main__``).

A block fenced as ```python no-run is shown but not run (use only when running it is
impossible here). At the end every pool is stopped and no worker may be left.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
GUIDES = sorted((REPO / "docs" / "guides").glob("*.md"))
FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```[ \t]*$", re.S | re.M)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, source) of each runnable ```python block."""
    blocks = []
    for m in FENCE.finditer(text):
        info = m.group(1).strip().split()
        if "no-run" in info:
            continue
        blocks.append((text.count("\n", 0, m.start()) + 2, m.group(2)))
    return blocks


def script_for(guide: Path) -> str:
    """The guide as one script. Its body runs under ``if __name__ == "__main__"``: a notebook
    or REPL (where readers paste these blocks) is never re-imported by the processes that
    Dask's ``LocalCluster`` spawns, and a file-based ``__main__`` would be."""
    parts = ["import sys as _sys\n"]
    for line, src in python_blocks(guide.read_text()):
        parts.append(f"print('--- {guide.name}:{line}', flush=True)\n")
        parts.append(f"exec(compile({src!r}, {str(guide) + ':' + str(line)!r}, 'exec'), globals())\n")
    parts.append(textwrap.dedent("""
        import snakepit
        left = [p.name for p in snakepit.list_pools()]
        snakepit.shutdown()
        print('--- pools left running at the end:', left, flush=True)
    """))
    return 'if __name__ == "__main__":\n' + textwrap.indent("".join(parts), "    ")


def test_fence_parser():
    text = "x\n```python\na = 1\n```\n```python no-run\nboom()\n```\n```text\nno\n```\n"
    assert python_blocks(text) == [(3, "a = 1\n")]


def test_every_guide_has_code():
    assert {g.name for g in GUIDES} >= {"configurations.md", "tuning.md", "migration-process-to-thread.md"}
    for guide in GUIDES:
        assert python_blocks(guide.read_text()), guide


@pytest.mark.parametrize("guide", GUIDES, ids=lambda g: g.stem)
def test_guide_runs(guide: Path, tmp_path: Path):
    script = tmp_path / "guide.py"
    script.write_text(script_for(guide))
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "--- pools left running at the end: []" in proc.stdout, out[-3000:]
