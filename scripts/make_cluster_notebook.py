"""Writes notebooks/05-laptop-to-cluster.ipynb (run: python scripts/make_cluster_notebook.py)."""
import os

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

cells = []
def md(text): cells.append(new_markdown_cell(text))
def code(text, tag=None):
    c = new_code_cell(text)
    if tag:
        c.metadata["tags"] = [tag]
    cells.append(c)

md("""# From laptop to cluster

The same cells on a **local pool** (workers are children of this kernel) and on a **Dask
cluster** (workers are children of the Dask workers, wherever those run). Only the line that
starts the pool changes: `cluster=` takes a scheduler address, a `distributed.Client`, or any
Dask cluster object. Here the cluster is a `LocalCluster` on this machine so the notebook runs
anywhere; on a real cluster you would write one of:

```python
# Slurm / PBS / SGE (pip install dask-jobqueue)
from dask_jobqueue import SLURMCluster
cluster = SLURMCluster(cores=16, memory="64GB", walltime="02:00:00"); cluster.scale(jobs=4)

# Kubernetes (pip install dask-kubernetes)
from dask_kubernetes.operator import KubeCluster
cluster = KubeCluster(name="snakepit", image="ghcr.io/me/image-with-snakepit:1.0", n_workers=4)

# or an existing scheduler
pool = snakepit.start_pool("work", cluster="tcp://scheduler.example:8786", pool_size=32)
```

The cluster's workers need the same Python packages as this kernel (snakepit included): see
`docs/cluster.md` for ports, TLS and what crosses the network. Runs in ~15 s.""")

code("""import os, time
import psutil
import snakepit
from snakepit import diagnostics as dx
%load_ext snakepit_nb

def slow_square(x):                 # defined in the notebook: shipped to the workers by value
    time.sleep(0.05)
    return x * x

def the_analysis(pool):
    \"\"\"The work of this notebook: every call style, the same on any pool.\"\"\"
    squares = list(pool.map(slow_square, range(40)))
    total = pool.submit(sum, squares).result()
    streamed = list(pool.execute_stream("count", {"n": 3}))
    with pool.session("state") as s:
        s.run_code("acc = [1, 2, 3]")
        s.run_code("acc.append(4)")
        kept = s.run_code("len(acc)").result
    return {"total": total, "streamed": streamed, "session_kept": kept}

def where_it_runs(pool):
    \"\"\"Each worker: its host, the Dask worker hosting it (None locally), its parent process.\"\"\"
    frame = dx.get_pool_stats(pool).to_frame()[["worker_id", "host", "dask_worker", "pid", "status", "memory_mb"]]
    frame["parent"] = [parent_of(pid) for pid in frame["pid"]]
    return frame

dask_worker_pids = set()            # filled in once there is a cluster

def parent_of(pid):
    parent = psutil.Process(pid).parent()
    if parent.pid == os.getpid():
        return "this kernel"
    if parent.pid in dask_worker_pids:
        return f"Dask worker (pid {parent.pid})"
    if parent.ppid() == os.getpid():
        return f"a child of this kernel (pid {parent.pid})"
    return f"pid {parent.pid}"
""")

md("## 1. On the laptop: a local pool")
code("""pool = snakepit.start_pool("work", pool_size=2)
pool.backend""", tag="local-backend")
code("""local_result = the_analysis(pool)
local_result""", tag="local-result")
code("""local_where = where_it_runs(pool)
local_where""", tag="local-where")
code("""%%snakepit_run --pool work --all
import os, socket
print("running on", socket.gethostname(), "pid", os.getpid())""", tag="local-run")
code("""snakepit.stop_pool("work")""")

md("""## 2. On a cluster: the same cells

`LocalCluster(processes=True)` starts a scheduler and two Dask worker processes. snakepit
installs a small `WorkerPlugin` on them; each Dask worker starts the snakepit workers as its
own children, and this kernel talks to them over gRPC on TCP with the pool's secret.""")
code("""from distributed import Client, LocalCluster

cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                       dashboard_address=":0")
client = Client(cluster)
dask_worker_pids |= set(client.run(os.getpid).values())
pool = snakepit.start_pool("work", cluster=cluster, pool_size=2)
pool.backend""", tag="cluster-backend")
code("""cluster_result = the_analysis(pool)
cluster_result""", tag="cluster-result")
code("""cluster_where = where_it_runs(pool)
cluster_where""", tag="cluster-where")
code("""%%snakepit_run --pool work --all
import os, socket
print("running on", socket.gethostname(), "pid", os.getpid())""", tag="cluster-run")

md("""Same answers; the workers now hang under Dask worker processes (their `parent`), and the
frames say which Dask worker hosts each one.""")
code("""same = cluster_result == local_result
under_dask = all(psutil.Process(pid).ppid() in dask_worker_pids for pid in cluster_where["pid"])
same, under_dask""", tag="compare")

md("## Clean up\nStop the pool first (its workers leave with it), then the cluster.")
code("""snakepit.stop_pool("work")
client.close()
cluster.close()
snakepit.list_pools()""", tag="cleanup")

nb = new_notebook(cells=cells, metadata={
    "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
    "language_info": {"name": "python"}})
nbformat.write(nb, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "notebooks", "05-laptop-to-cluster.ipynb"))
