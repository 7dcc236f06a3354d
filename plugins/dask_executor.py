"""Executor ``dask``: run a leaderboard's runs on a dask.distributed cluster.

``untied run SPEC --executor dask --scheduler tcp://host:8786`` sends every work unit (a run,
or a group of runs) to the cluster's workers; without ``--scheduler`` a ``LocalCluster`` of
``--jobs`` single-threaded worker processes is started on this machine and closed afterwards.
Each worker writes its records itself, atomically (temp file and rename, see
:mod:`bench_core.results.records`), into the results folder, which must therefore be a path every
worker can reach (a shared filesystem on a cluster). Resume works across executors: the runner
skips every run already recorded, whoever recorded it.

If a worker dies mid-run, the scheduler runs its unit again on another worker (dask's
``allowed-failures``); a unit finished twice writes the same record file twice, so no run is
lost or duplicated. Workers need ``untied-bench`` (and any plugin the spec uses) installed in
the same versions as here; the records' environment columns show what each worker had.

A SLURM cluster: start one with ``dask-jobqueue`` (``examples/slurm/``: a configuration file
and a launcher that prints the scheduler address), then pass that address with
``--scheduler``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

from pydantic import BaseModel, ConfigDict, Field

from bench_core.hookspecs import hookimpl


class DaskParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scheduler: str | None = Field(None, description="address of a running dask scheduler "
                                  "(tcp://host:8786); none: start a LocalCluster")
    jobs: int = Field(2, ge=1, description="workers of the LocalCluster (one thread each)")
    allowed_failures: int = Field(3, ge=0, description="times a unit is retried when its "
                                  "worker dies")


class DaskExecutor:
    def __init__(self, params: DaskParams) -> None:
        self.p = params

    def _client(self):
        try:
            import dask
            from distributed import Client, LocalCluster
        except ImportError:
            from bench_core.errors import UntiedError

            raise UntiedError("--executor dask needs dask.distributed: pip install "
                              "'untied-bench[dask]'") from None
        dask.config.set({"distributed.scheduler.allowed-failures": self.p.allowed_failures})
        if self.p.scheduler:
            return Client(self.p.scheduler), None
        cluster = LocalCluster(n_workers=self.p.jobs, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        return Client(cluster), cluster

    def map(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]:
        from distributed import as_completed

        client, cluster = self._client()
        try:
            futures = [client.submit(fn, task, pure=False) for task in tasks]
            for future in as_completed(futures):
                yield future.result()
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


def dask_executor(params: DaskParams) -> DaskExecutor:
    """Run tasks on a dask.distributed cluster (--scheduler ADDRESS, or a LocalCluster)."""
    return DaskExecutor(params)


@hookimpl
def register_executors(register):
    register("dask", dask_executor, params=DaskParams)
