"""The SLURM example (examples/slurm): the dask-jobqueue configuration builds a worker job
script with the settings it promises, without SLURM or any submission."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
from conftest import REPO

pytest.importorskip("dask_jobqueue")
SLURM = REPO / "examples" / "slurm"


def test_the_config_gives_single_threaded_untied_workers():
    spec = importlib.util.spec_from_file_location("start_cluster", SLURM / "start_cluster.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cluster = module.make_cluster(SLURM / "dask-jobqueue.yaml")
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH -J untied-worker" in script
    assert "#SBATCH -p normal" in script
    assert "#SBATCH -n 1" in script and "#SBATCH --cpus-per-task=1" in script
    assert "export OMP_NUM_THREADS=1" in script and "source .venv/bin/activate" in script
    assert "--nthreads 1" in script and "--nworkers" not in script   # one process per job


def test_the_launcher_prints_the_job_script():
    out = subprocess.run([sys.executable, str(SLURM / "start_cluster.py"), "--print-job-script"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("#!/usr/bin/env bash")
    assert "distributed.cli.dask_worker" in out.stdout
