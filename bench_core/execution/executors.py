"""Executors: run a leaderboard's tasks in this process, or in a pool of local processes."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterable, Iterator

from pydantic import BaseModel, ConfigDict, Field

from bench_core.execution import process_guard
from bench_core.execution.environment import cpu_count
from bench_core.hookspecs import hookimpl


class LocalParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    jobs: int = Field(1, ge=1, description="ignored: local runs one task at a time")


class ProcessesParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    jobs: int = Field(2, ge=1, description="worker processes")


class LocalExecutor:
    def __init__(self, params: LocalParams) -> None:
        self.params = params

    def map(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]:
        for task in tasks:
            yield fn(task)


def _init_worker(threads: int) -> None:
    import torch

    from bench_core.execution.environment import git_commit

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    git_commit()    # the commit of the code this worker loaded (cached for its records)


class ProcessExecutor:
    """A ``spawn`` process pool (safe with CUDA); each worker gets ``cpus // jobs`` threads
    (each run then pins its own, ``untied run --threads``). Results are yielded as they
    complete; at most ``jobs`` tasks are in flight, so Ctrl-C loses only the runs in progress.
    Workers end with their parent, even when it is killed (:mod:`.process_guard`)."""

    def __init__(self, params: ProcessesParams) -> None:
        self.jobs = params.jobs

    def map(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]:
        threads = max(1, cpu_count() // self.jobs)
        ctx = multiprocessing.get_context("spawn")
        os.environ[process_guard.ENV] = str(os.getpid())
        pending = iter(tasks)
        pool = ProcessPoolExecutor(self.jobs, mp_context=ctx, initializer=_init_worker,
                                   initargs=(threads,))
        try:
            running = set()
            for task in pending:
                running.add(pool.submit(fn, task))
                if len(running) >= self.jobs:
                    break
            while running:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
                    nxt = next(pending, None)
                    if nxt is not None:
                        running.add(pool.submit(fn, nxt))
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


def local(params: LocalParams) -> LocalExecutor:
    """Run tasks one after another in this process."""
    return LocalExecutor(params)


def processes(params: ProcessesParams) -> ProcessExecutor:
    """Run tasks in a pool of worker processes on this machine (--jobs N)."""
    return ProcessExecutor(params)


@hookimpl
def register_executors(register):
    register("local", local, params=LocalParams)
    register("processes", processes, params=ProcessesParams)
