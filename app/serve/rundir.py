"""The supervisor's runtime directory (engine sockets, metrics files), whose name also prefixes
every shared-memory file of its processes, and the lock that says its supervisor is alive.

Leftovers of a supervisor killed outright (SIGKILL, an OOM kill) are found by that lock, not by
its pid: in a container the supervisor is PID 1 at every start, so after a crash and a restart
the dead supervisor's pid is alive again. The live supervisor holds an exclusive `flock` on
`<dir>/owner.lock` for its whole life; the kernel drops it when the process dies, however it
dies, and nothing else can take it meanwhile."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from pathlib import Path

BASE = "jacobian"
LOCK = "owner.lock"


class RunDir:
    """A new runtime directory, locked by this process until `close`."""

    def __init__(self, parent: str | None = None) -> None:
        self.path = tempfile.mkdtemp(prefix=f"{BASE}-{os.getpid()}-", dir=parent)
        self.name = os.path.basename(self.path)  # jacobian-<pid>-<random>: no dash in the random part
        self._lock = os.open(os.path.join(self.path, LOCK), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._lock)


def owned(path: Path) -> bool:
    """Is the runtime directory at `path` held by a live supervisor?"""
    try:
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return _just_made(path)  # a supervisor between mkdtemp and its lock
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the lock if it was taken here
    return False


def _just_made(path: Path, seconds: float = 10.0) -> bool:
    try:
        return time.time() - path.stat().st_mtime < seconds
    except FileNotFoundError:
        return False


def owner_name(file_name: str) -> str:
    """`jacobian-<pid>-<random>-<worker pid>-<n>` → `jacobian-<pid>-<random>`."""
    return "-".join(file_name.split("-")[:3])


def sweep_orphans(parent: str, shm_dir: str) -> tuple[int, int]:
    """Remove the runtime directories under `parent` and the shared-memory files in `shm_dir` of
    supervisors that are gone; how many of each."""
    live: set[str] = set()
    dirs = 0
    for path in Path(parent).glob(f"{BASE}-*-*"):
        if not path.is_dir():
            continue
        if owned(path):
            live.add(path.name)
        else:
            shutil.rmtree(path, ignore_errors=True)
            dirs += 1
    files = 0
    if os.path.isdir(shm_dir):
        for path in Path(shm_dir).glob(f"{BASE}-*"):
            # Segments are regular files; anything else of a like name is someone else's.
            if path.is_symlink() or not path.is_file() or owner_name(path.name) in live:
                continue
            with contextlib.suppress(OSError):  # removed meanwhile, or not ours to remove
                path.unlink()
                files += 1
    return dirs, files
