"""`python -m imgdist.engine_main ARGS`: `ipengine ARGS` that stops when its starter dies.

Linux's parent-death signal survives exec, so an engine started from a notebook kernel gets
SIGTERM even when the kernel is SIGKILLed (when no atexit handler can run). It is set here, in
the new process, not in a preexec_fn: forking a threaded kernel makes that unsafe.
"""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main() -> None:
    """Arm the parent-death signal, then become the engine."""
    starter = int(os.environ.pop("IMGDIST_STARTER_PID", "0"))
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if starter and os.getppid() != starter:
            sys.exit("the process that started this engine has already gone")
    os.execv(sys.executable, [sys.executable, "-m", "ipyparallel.engine", *sys.argv[1:]])


if __name__ == "__main__":
    main()
