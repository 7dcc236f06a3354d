"""The machine a run runs on: the device asked for, CPU model and count, what decides float
rounding (CPU kernels, BLAS, CUDA and cuDNN versions, the C++ compiler of compiled kernels), versions and the source commit. Every
record holds them.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

import bench_core
from bench_core.errors import SpecError
from bench_core.plugins import PluginHost


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; validate ``cuda[:N]``."""
    device = device.strip().lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise SpecError(f"--device {device}: CUDA is not available on this machine "
                            f"(torch {torch.__version__}); use --device cpu or auto")
        if ":" in device:
            idx = device.split(":", 1)[1]
            if not idx.isdigit() or int(idx) >= torch.cuda.device_count():
                raise SpecError(f"--device {device}: no such CUDA device "
                                f"({torch.cuda.device_count()} available)")
        return device
    raise SpecError(f"--device {device}: expected auto, cpu, cuda or cuda:N")


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the untied-bench source tree, with ``+dirty`` if it has local changes.
    Read once per process; :func:`run_plan` and executor workers read it when they start, so a
    grid that runs for hours while the checkout moves on records the commit it was started
    from."""
    src = Path(bench_core.__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (Linux: ``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@functools.lru_cache(maxsize=1)
def numerics() -> dict[str, str | None]:
    """What decides float rounding on this machine beyond the code: torch's CPU kernel
    capability (``AVX2``, ``AVX512``, ...; ``ATEN_CPU_CAPABILITY`` can lower it), the BLAS
    library torch uses and its version line, the CUDA and cuDNN versions where CUDA is
    available, and the C++ compiler compiled kernels would use (:func:`cpp_compiler`). Two records with the same values (and CPU model, torch version, device) come
    from machines that round alike."""
    import re as _re

    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - an older torch
        capability = None
    config = torch.__config__.show()
    found = _re.search(r"BLAS_INFO=([^,\s]+)", config)
    blas = found.group(1) if found else None
    library = next((line.strip(" -") for line in config.splitlines()
                    if "Math Kernel Library Version" in line or "OpenBLAS" in line), None)
    if library and "Version" in library:
        library = "MKL " + library.split("Version", 1)[1].split("-", 1)[0].strip()
    cuda = torch.version.cuda if torch.cuda.is_available() else None
    cudnn = (str(torch.backends.cudnn.version()) if torch.cuda.is_available()
             and torch.backends.cudnn.is_available() else None)
    return {"cpu_capability": capability,
            "blas": " ".join(x for x in (blas, library and f"({library})") if x) or None,
            "cuda_version": cuda, "cudnn_version": cudnn, "cpp_compiler": cpp_compiler()}


def cpp_compiler() -> str:
    """The C++ compiler ``torch.compile`` (inductor) would use on the CPU, as its ``--version``
    line, or ``"none"``: inductor's default search (``$CXX``, else ``g++``) without importing
    inductor. Components that run compiled kernels where compiling works and their eager
    formulas where not (``bench_core.kit.compiled``) may round differently in the last bit
    between a machine with a compiler and one without, so records keep it."""
    import shutil

    found = shutil.which(os.environ.get("CXX") or "g++")
    if found is None:
        return "none"
    try:
        done = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "none"
    line = (done.stdout.splitlines() or [""])[0].strip()
    return line if done.returncode == 0 and line else "none"


def environment(host: PluginHost, device: str) -> dict[str, Any]:
    """Where a run ran: device, CPU model and count, what decides float rounding
    (:func:`numerics`), torch's intra-op threads at record time, versions and the source
    commit."""
    cuda_name = None
    if device.startswith("cuda"):
        cuda_name = torch.cuda.get_device_name(torch.device(device))
    return {
        "device": device,
        "cuda_device": cuda_name,
        **numerics(),
        "cpu_model": cpu_model(),
        "cpus": cpu_count(),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "plugins_json": json.dumps(host.versions(), sort_keys=True),
        "untied_version": bench_core.__version__,
    }


def cpu_count() -> int:
    """CPUs this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
