"""Start a dask cluster of SLURM jobs for ``untied run --executor dask``.

    python examples/slurm/start_cluster.py --jobs 50 [--config examples/slurm/dask-jobqueue.yaml]

prints the scheduler address and keeps the cluster up until Ctrl-C; in another shell (on the
login node, sharing the filesystem with the workers):

    untied run troiano-suc --profile full --executor dask --scheduler tcp://ADDRESS:PORT

``--print-job-script`` prints the batch script one worker job gets and exits (no SLURM needed).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import dask
import yaml

HERE = Path(__file__).resolve().parent


def load_config(path: Path) -> None:
    """Merge a dask-jobqueue YAML file into dask's configuration."""
    with open(path, encoding="utf-8") as f:
        dask.config.update(dask.config.config, yaml.safe_load(f), priority="new")


def make_cluster(config: Path):
    from dask_jobqueue import SLURMCluster

    load_config(config)
    return SLURMCluster()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=HERE / "dask-jobqueue.yaml")
    ap.add_argument("--jobs", type=int, default=10, help="SLURM jobs (workers) to request")
    ap.add_argument("--print-job-script", action="store_true")
    args = ap.parse_args()
    cluster = make_cluster(args.config)
    if args.print_job_script:
        print(cluster.job_script())
        cluster.close()
        return
    cluster.scale(jobs=args.jobs)
    print(f"scheduler: {cluster.scheduler_address}  (untied run SPEC --executor dask "
          f"--scheduler {cluster.scheduler_address})", flush=True)
    try:
        while True:
            time.sleep(60)
    except KeyboardInterrupt:
        cluster.close()


if __name__ == "__main__":
    main()
