"""Worker processes that end with their parent, even when the parent is killed with SIGKILL.

A process pool's workers would otherwise outlive a killed parent: each holds both ends of the
pool's queues (so none ever sees end-of-file) and waits for work forever. The parent sets
``UNTIED_POOL_PARENT`` to its pid before starting a pool; a spawned worker imports this module
first thing (``bench_core.execution.executors`` does, before torch), and when it finds that its
parent is that pid it arms Linux's parent-death signal and a watchdog thread that exits the
process once it is re-parented (any platform). Nothing happens in any other process.
"""

from __future__ import annotations

import os
import sys
import threading
import time

ENV = "UNTIED_POOL_PARENT"


def die_with_parent() -> None:
    """End this process when its parent ends (module docstring)."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="untied-parent-watch", daemon=True).start()


if os.environ.get(ENV) == str(os.getppid()):
    die_with_parent()
