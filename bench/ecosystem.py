"""``python -m bench.ecosystem [--quick] [--json PATH]``: the joblib row (issue 15).

``GridSearchCV(SVC(), …, cv=3)`` on scikit-learn's digits, the same ``n_jobs`` (2: this
box's cores) with joblib's default backend (loky), snakepit's joblib backend on a 2-worker
pool, and Dask's joblib backend on a 2-worker ``LocalCluster``. Each backend is warmed up
once (its workers started, imports done) and then timed over ``repeats`` fits; the table
reports the median wall time and the ratio to loky, and checks every fit's best score
equals the serial one.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time


def _search(n_jobs: int, quick: bool):  # noqa: ANN202
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    grid = {"C": [1, 10], "gamma": [0.001, 0.01]} if quick else {"C": [0.5, 1, 5, 10], "gamma": [0.0005, 0.001, 0.005]}
    return GridSearchCV(SVC(), grid, cv=3, n_jobs=n_jobs)


def run(quick: bool = False, repeats: int = 3, n_jobs: int = 2) -> dict:
    import joblib
    from sklearn.datasets import load_digits

    import snakepit
    import snakepit.joblib  # noqa: F401 - registers "snakepit"

    X, y = load_digits(return_X_y=True)
    if quick:
        X, y = X[:400], y[:400]
    serial = _search(1, quick).fit(X, y).best_score_
    out: dict = {"n_jobs": n_jobs, "repeats": repeats, "samples": len(X), "serial_best_score": serial}

    def timed(name: str, config: dict) -> None:
        with joblib.parallel_config(**config):
            _search(n_jobs, quick).fit(X, y)  # warm-up: workers and imports
            walls, scores = [], []
            for _ in range(repeats):
                t = time.perf_counter()
                scores.append(_search(n_jobs, quick).fit(X, y).best_score_)
                walls.append(time.perf_counter() - t)
        out[name] = {"wall_s": statistics.median(walls), "walls": walls,
                     "same_score": all(s == serial for s in scores)}

    timed("loky", {"backend": "loky"})
    pool = snakepit.start_pool("bench-joblib", pool_size=n_jobs, queue_timeout=None)
    try:
        timed("snakepit", {"backend": "snakepit", "pool": "bench-joblib"})
    finally:
        snakepit.stop_pool("bench-joblib")
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=n_jobs, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0") as cluster, Client(cluster):
        timed("dask", {"backend": "dask"})
    for name in ("snakepit", "dask"):
        out[name]["ratio_to_loky"] = out[name]["wall_s"] / out["loky"]["wall_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.ecosystem")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    out = run(quick=args.quick, repeats=1 if args.quick else 3)
    print(f"GridSearchCV(SVC) on digits ({out['samples']} samples), n_jobs={out['n_jobs']}, "
          f"median of {out['repeats']}:\n")
    print("| backend | wall s | ratio to loky | best score = serial |\n|---|---|---|---|")
    for name in ("loky", "snakepit", "dask"):
        r = out[name]
        print(f"| {name} | {r['wall_s']:.2f} | {r.get('ratio_to_loky', 1.0):.2f}x | {r['same_score']} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
