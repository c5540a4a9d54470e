"""The live panel in a real ipykernel: it refreshes in the background (comm updates keep coming
while the kernel is idle), other cells keep running, and it never writes into their output."""
from __future__ import annotations

import queue
import time

from test_magics_kernel import Kernel


def test_panel_refreshes_in_the_background_without_stealing_output(tmp_path):
    k = Kernel(str(tmp_path))
    try:
        reply, messages = k.execute(
            "import time, snakepit, snakepit_nb\n"
            "pool = snakepit.start_pool('default', profile='process', pool_size=2)\n"
            "panel = snakepit_nb.Panel(interval=0.2)\n"
            "panel")
        assert reply["content"]["status"] == "ok", reply["content"]
        kinds = [m["msg_type"] for _, m in messages]
        assert "execute_result" in kinds
        shown = next(m for _, m in messages if m["msg_type"] == "execute_result")["content"]["data"]
        assert "application/vnd.jupyter.widget-view+json" in shown and "text/html" in shown

        # While the kernel is idle, widget updates keep arriving over iopub (comm messages).
        updates = 0
        deadline = time.monotonic() + 30
        while updates < 5 and time.monotonic() < deadline:
            try:
                msg = k.kc.get_iopub_msg(timeout=1.0)
            except queue.Empty:
                continue
            if msg["msg_type"] == "comm_msg" and msg["content"]["data"].get("method") == "update":
                updates += 1
        assert updates >= 5, "the panel did not refresh in the background"

        # Other cells run while it refreshes, and their output is theirs alone.
        reply, messages = k.execute(
            "for i in range(3):\n"
            "    print('mine', i)\n"
            "    time.sleep(0.5)\n"
            "futures = [pool.submit(time.sleep, 0.5) for _ in range(4)]\n"
            "[f.result() for f in futures] and None")
        assert reply["content"]["status"] == "ok"
        outputs = [m for _, m in messages if m["msg_type"] in ("stream", "display_data", "execute_result",
                                                                "error", "update_display_data")]
        assert all(m["msg_type"] == "stream" and m["content"]["name"] == "stdout" for m in outputs), outputs
        assert "".join(m["content"]["text"] for m in outputs) == "mine 0\nmine 1\nmine 2\n"

        assert k.value("panel.refreshes > 5 and panel.last_error is None") == "True"
        assert k.value("panel.close(); panel.thread is None and not any("
                       "t.name.startswith('snakepit-panel') for t in __import__('threading').enumerate())") == "True"
    finally:
        k.close()
