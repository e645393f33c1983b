"""Child processes that cannot outlive the process that started them.

`python app/lifeline.py PID CMD...` asks the kernel (Linux `PR_SET_PDEATHSIG`) to SIGKILL it when
its parent dies, checks that the parent is still PID (it may have died before the request), then
execs CMD, which keeps the request. So a server started by a test or the benchmark is gone even
when the process that started it is killed or crashes before any `finally` can run.

The kernel ties this to the *thread* that forked: start children from a thread that lives as
long as they should (the main thread).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def command(cmd: list[str]) -> list[str]:
    """`cmd`, run so that it dies with this process, with the environment it is given."""
    # Run as a file, not `-m app.lifeline`: importing the package would apply its TensorFlow
    # environment (app/__init__.py) to the child, and a child may want another one.
    return [sys.executable, os.path.abspath(__file__), str(os.getpid()), *cmd]


def die_with_parent(parent: int | None = None) -> None:
    """Have the kernel SIGKILL this process when its parent dies (from now on, across exec)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if parent is not None and os.getppid() != parent:
        sys.exit(f"lifeline: parent {parent} is already gone")


def main(argv: list[str]) -> None:
    parent, cmd = int(argv[0]), argv[1:]
    die_with_parent(parent)
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main(sys.argv[1:])
