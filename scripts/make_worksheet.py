import nbformat
from nbformat.v4 import new_notebook, new_markdown_cell, new_code_cell

cells = []
md = lambda s: cells.append(new_markdown_cell(s))
def code(s, tag):
    c = new_code_cell(s); c.metadata["tags"] = [tag]; cells.append(c)

md("""# Capacity-planning worksheet

State a target in the first code cell, run the notebook top to bottom (*Run All*). It
calibrates **your** function on a small pool — a 2-worker `process` pool and a 1-worker ×
2-thread `thread` pool — and answers:

* **which profile** (`process` or `thread`), from the measured GIL-boundness;
* **how many workers** (and threads per worker) reach the target throughput and latency;
* **how much memory** that pool takes, against your budget.

The answer is the `summary` DataFrame at the end, with two plotly charts: the projections
with an error band, against the measured points. Calibration takes a few seconds.
Guides: [configurations](../guides/configurations.md), [tuning](../guides/tuning.md),
[process → thread](../guides/migration-process-to-thread.md).""")

code('''import os

# ---- your target (edit these) ------------------------------------------------------------
TARGET_THROUGHPUT = float(os.environ.get("WORKSHEET_TARGET_THROUGHPUT", 100))  # tasks per second
TARGET_LATENCY_S = float(os.environ.get("WORKSHEET_TARGET_LATENCY_S", 1.0))    # one task, at most
MEMORY_BUDGET_MB = float(os.environ.get("WORKSHEET_MEMORY_BUDGET_MB", 4096))   # for the whole pool
MACHINE_CORES = int(os.environ.get("WORKSHEET_CORES", os.cpu_count() or 2))    # of the target machine

# ---- the calibration ----------------------------------------------------------------------
WORKLOAD = os.environ.get("WORKSHEET_WORKLOAD", "example")  # "example", "cpu", "sleep" or "mine"
CALIBRATION_TASKS = int(os.environ.get("WORKSHEET_TASKS", 16))  # per measurement; keep it small
CALIBRATION_WORKERS = 2                                          # capacity of each calibration pool''', "parameters")

md("""## Your function

`task(arg)` is what the calibration runs, `task_arg` its argument. Set `WORKLOAD = "mine"`
above and fill in `my_task` (it can be defined here, in the notebook). Aim for a
representative input: the projection scales what one call costs.""")

code('''import time

def example_task(n=20_000):
    """The provided example: pure-Python feature counting over generated text (holds the GIL)."""
    words = [f"w{(i * 7919) % 997}" for i in range(n)]
    counts = {}
    for w in words:
        counts[w] = counts.get(w, 0) + 1
    return len(counts)

def cpu_task(n=150_000):
    total = 0
    for i in range(n):
        total += i * i % 7
    return total

def sleep_task(seconds=0.03):
    time.sleep(seconds)            # stands for I/O: a database, an HTTP API, a file
    return seconds

def my_task(arg):                  # <- your function
    return example_task(arg)

TASKS = {"example": (example_task, 20_000), "cpu": (cpu_task, 150_000),
         "sleep": (sleep_task, 0.03), "mine": (my_task, 20_000)}
task, task_arg = TASKS[WORKLOAD]

def timed(arg):
    """Runs in the worker: the task's wall time and the CPU time of its thread."""
    import time
    c0, w0 = time.thread_time(), time.perf_counter()
    task(arg)
    return time.perf_counter() - w0, time.thread_time() - c0''', "task")

md("""## Calibration

1. **Per-task time**: tasks one at a time on the process pool (no contention).
2. **Process speedup**: the same tasks on 2 process workers at once.
3. **Thread speedup**: the same tasks on 1 worker × 2 threads at once. A GIL-bound task
   gets no speedup from threads; a GIL-releasing one (I/O, NumPy) gets the same as from
   processes.
4. **Memory** of each pool, measured (USS: what each worker alone holds).""")

code('''import math
import statistics

import pandas as pd
import snakepit
from snakepit import diagnostics as dx

procs = snakepit.start_pool("ws-process", profile="process", pool_size=CALIBRATION_WORKERS, queue_timeout=None)
threads = snakepit.start_pool("ws-thread", profile="thread", pool_size=1,
                              threads_per_worker=CALIBRATION_WORKERS, queue_timeout=None)

def parallel_rate(pool, n):
    list(pool.map(timed, [task_arg] * CALIBRATION_WORKERS, chunksize=1))   # warm-up
    t0 = time.perf_counter()
    runs = list(pool.map(timed, [task_arg] * n, chunksize=1))
    return n / (time.perf_counter() - t0), runs

procs.submit(timed, task_arg).result()                                       # warm-up
serial = [procs.submit(timed, task_arg).result() for _ in range(CALIBRATION_TASKS)]
walls = sorted(w for w, _ in serial)
per_task_s = statistics.median(walls)
per_task_lo, per_task_hi = walls[len(walls) // 4], walls[(3 * len(walls)) // 4]
cpu_fraction = statistics.median(c / w for w, c in serial if w > 0)
serial_rate = 1.0 / per_task_s

process_rate, _ = parallel_rate(procs, CALIBRATION_TASKS * 2)
thread_rate, _ = parallel_rate(threads, CALIBRATION_TASKS * 2)
process_speedup = process_rate / serial_rate
thread_speedup = thread_rate / serial_rate

proc_mem = dx.get_memory_stats(procs)
thread_mem = dx.get_memory_stats(threads)
calibration = pd.DataFrame([
    {"run": "serial (1 at a time)", "capacity": 1, "tasks_per_s": serial_rate, "speedup": 1.0},
    {"run": f"process x{CALIBRATION_WORKERS}", "capacity": CALIBRATION_WORKERS,
     "tasks_per_s": process_rate, "speedup": process_speedup},
    {"run": f"thread 1x{CALIBRATION_WORKERS}", "capacity": CALIBRATION_WORKERS,
     "tasks_per_s": thread_rate, "speedup": thread_speedup},
]).round(3)
print(f"per task: {per_task_s * 1000:.1f} ms (IQR {per_task_lo * 1000:.1f}–{per_task_hi * 1000:.1f} ms), "
      f"CPU fraction {cpu_fraction:.2f}")
calibration''', "calibrate")

md("""## The decision

* **GIL-bound** when threads give clearly less speedup than processes (`thread_speedup <
  0.75 × process_speedup`). When the machine was too busy for the processes to speed up
  either (`process_speedup < 1.3`), the task's CPU fraction decides: a task that computes
  (CPU fraction > 0.5) counts as GIL-bound — the safe choice, since NumPy-like work that
  releases the GIL also runs well on processes.
* **Capacity** = concurrent requests needed for the target throughput, from the measured
  per-task time and the chosen profile's parallel efficiency. A `process` pool of GIL-bound
  work cannot use more workers than cores.
* **Memory**: `snakepit.diagnostics.compare_profiles` projects both profiles at that capacity
  from the measured workers (shared pages counted once).""")

code('''if process_speedup >= 1.3:
    gil_bound = thread_speedup < 0.75 * process_speedup
else:
    gil_bound = cpu_fraction > 0.5
profile = "process" if gil_bound else "thread"

efficiency = max(0.1, min(1.0, (process_speedup if gil_bound else thread_speedup) / CALIBRATION_WORKERS))
capacity = max(1, math.ceil(TARGET_THROUGHPUT * per_task_s / efficiency))
if profile == "process":
    threads_per_worker = 1
    workers = capacity
else:
    threads_per_worker = min(16, capacity)
    workers = max(1, math.ceil(capacity / threads_per_worker))
    capacity = workers * threads_per_worker

def projected_rate(cap, seconds):
    usable = min(cap, MACHINE_CORES) if gil_bound else cap
    return usable * efficiency / seconds

comparison = dx.compare_profiles(procs, capacity=capacity, threads_per_worker=max(1, threads_per_worker)
                                 if profile == "thread" else min(16, capacity))
row = comparison.set_index("profile").loc[profile]
projected_memory_mb = float(row["projected_total_mb"])
projected_throughput = projected_rate(capacity, per_task_s)
notes = []
if gil_bound and capacity > MACHINE_CORES:
    notes.append(f"needs {capacity} cores for the target, the machine has {MACHINE_CORES}")
if projected_memory_mb > MEMORY_BUDGET_MB:
    notes.append("over the memory budget")
if per_task_s > TARGET_LATENCY_S:
    notes.append("one task alone is slower than the latency target: split the work")
comparison''', "decide")

md("""## Charts: projections with an error band against the measured points""")

code('''import plotly.graph_objects as go

caps = list(range(1, max(8, 2 * capacity) + 1))
hi = [projected_rate(c, per_task_lo) for c in caps]
lo = [projected_rate(c, per_task_hi) for c in caps]
mid = [projected_rate(c, per_task_s) for c in caps]
measured_rate = process_rate if gil_bound else thread_rate
throughput_fig = go.Figure([
    go.Scatter(x=caps + caps[::-1], y=hi + lo[::-1], fill="toself", name="per-task IQR",
               line={"width": 0}, opacity=0.25, hoverinfo="skip"),
    go.Scatter(x=caps, y=mid, name=f"projected ({profile})", mode="lines"),
    go.Scatter(x=[1, CALIBRATION_WORKERS], y=[serial_rate, measured_rate], name="measured",
               mode="markers", marker={"size": 10}),
    go.Scatter(x=[caps[0], caps[-1]], y=[TARGET_THROUGHPUT] * 2, name="target", mode="lines",
               line={"dash": "dash"}),
])
throughput_fig.update_layout(title="Throughput vs capacity (concurrent requests)",
                             xaxis_title="capacity", yaxis_title="tasks/s")

uss = [w.uss_mb for w in proc_mem.workers if w.uss_mb is not None] or [proc_mem.avg_memory_per_worker_mb]
shared = proc_mem.shared_mb or 0.0
ns = list(range(1, max(8, 2 * workers) + 1))
frame = dx.project_memory(procs, ns)
low = [shared + n * min(uss) for n in ns]
high = [shared + n * max(uss) * 1.1 for n in ns]
measured = frame.dropna(subset=["measured_total_mb"])
memory_fig = go.Figure([
    go.Scatter(x=ns + ns[::-1], y=high + low[::-1], fill="toself", name="worker spread",
               line={"width": 0}, opacity=0.25, hoverinfo="skip"),
    go.Scatter(x=ns, y=list(frame["projected_total_mb"]), name="projected (process workers)", mode="lines"),
    go.Scatter(x=list(measured["workers"]), y=list(measured["measured_total_mb"]), name="measured",
               mode="markers", marker={"size": 10}),
    go.Scatter(x=[1], y=[thread_mem.footprint_mb or thread_mem.total_memory_mb],
               name=f"measured thread worker (1x{CALIBRATION_WORKERS})", mode="markers",
               marker={"size": 10, "symbol": "diamond"}),
    go.Scatter(x=[ns[0], ns[-1]], y=[MEMORY_BUDGET_MB] * 2, name="budget", mode="lines", line={"dash": "dash"}),
])
memory_fig.update_layout(title="Pool memory vs worker processes", xaxis_title="workers", yaxis_title="MB")
throughput_fig.show()
memory_fig.show()''', "charts")

md("""## The answer""")

code('''summary = pd.DataFrame([{
    "workload": WORKLOAD,
    "per_task_ms": round(per_task_s * 1000, 2),
    "cpu_fraction": round(cpu_fraction, 2),
    "process_speedup": round(process_speedup, 2),
    "thread_speedup": round(thread_speedup, 2),
    "gil_bound": bool(gil_bound),
    "profile": profile,
    "workers": int(workers),
    "threads_per_worker": int(threads_per_worker),
    "capacity": int(capacity),
    "target_throughput": TARGET_THROUGHPUT,
    "projected_throughput": round(projected_throughput, 1),
    "meets_throughput": projected_throughput >= TARGET_THROUGHPUT * 0.999,
    "target_latency_s": TARGET_LATENCY_S,
    "meets_latency": per_task_s <= TARGET_LATENCY_S,
    "projected_memory_mb": round(projected_memory_mb, 1),
    "memory_budget_mb": MEMORY_BUDGET_MB,
    "fits_memory": projected_memory_mb <= MEMORY_BUDGET_MB,
    "notes": "; ".join(notes),
}])
if profile == "thread":
    call = (f'snakepit.start_pool("mypool", profile="thread", pool_size={workers}, '
            f'threads_per_worker={threads_per_worker})')
else:
    call = f'snakepit.start_pool("mypool", profile="process", pool_size={workers})'
print(call)
summary.T''', "summary")

code('''snakepit.stop_pool("ws-process")
snakepit.stop_pool("ws-thread")
print([p.name for p in snakepit.list_pools()])''', "cleanup")

nb = new_notebook(cells=cells, metadata={
    "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
    "language_info": {"name": "python"}})
nbformat.write(nb, "/work/wt-guides/notebooks/04-capacity-planning-worksheet.ipynb")
