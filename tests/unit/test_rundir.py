"""Leftovers of a supervisor killed outright are found by its lock, not by its pid: in a container
the next supervisor has the same pid (1), so a pid that is alive proves nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from app.serve import rundir


def _leave_behind(tmp: Path, shm: Path, pid: int, *, aged: bool = True) -> tuple[Path, Path]:
    """What a supervisor with `pid` leaves when it is killed: its directory and a segment."""
    left = tmp / f"jacobian-{pid}-dead0"
    left.mkdir()
    (left / rundir.LOCK).touch()
    (left / "engine-0.sock").touch()
    if aged:
        old = time.time() - 60
        os.utime(left, (old, old))
    segment = shm / f"jacobian-{pid}-dead0-10-1"
    segment.write_bytes(b"\0" * 4096)
    return left, segment


def test_leftovers_of_a_dead_supervisor_whose_pid_is_alive_again_are_removed(tmp_path: Path) -> None:
    tmp, shm = tmp_path / "tmp", tmp_path / "shm"
    tmp.mkdir(), shm.mkdir()
    left, segment = _leave_behind(tmp, shm, os.getpid())  # the pid is alive: this very process
    old_format = shm / f"jacobian-{os.getpid()}-10-1"  # named by the pid alone, before the locks
    old_format.touch()
    live = rundir.RunDir(str(tmp))
    own_segment = shm / f"{live.name}-10-1"
    own_segment.touch()
    try:
        assert rundir.sweep_orphans(str(tmp), str(shm)) == (1, 2)
        assert not left.exists() and not segment.exists() and not old_format.exists()
        assert Path(live.path).is_dir() and own_segment.exists()  # the live one's are kept
    finally:
        live.close()
    assert not Path(live.path).exists()


def test_only_segment_files_are_swept_not_directories_or_links_of_a_like_name(tmp_path: Path) -> None:
    """A directory (a test's own shared-memory folder, say) or a link named like a segment once
    made the supervisor fail to start (IsADirectoryError); they are not its to remove."""
    tmp, shm = tmp_path / "tmp", tmp_path / "shm"
    tmp.mkdir(), shm.mkdir()
    folder = shm / "jacobian-test-abc123"
    folder.mkdir()
    (folder / "kept").touch()
    target = tmp_path / "elsewhere"
    target.touch()
    link = shm / "jacobian-1-gone0-10-1"
    link.symlink_to(target)
    _left, segment = _leave_behind(tmp, shm, os.getpid())
    assert rundir.sweep_orphans(str(tmp), str(shm)) == (1, 1)
    assert not segment.exists() and (folder / "kept").exists() and link.is_symlink() and target.exists()


def test_a_lock_held_by_another_live_process_keeps_its_files(tmp_path: Path) -> None:
    tmp, shm = tmp_path / "tmp", tmp_path / "shm"
    tmp.mkdir(), shm.mkdir()
    hold = f"from app.serve import rundir; d = rundir.RunDir({str(tmp)!r}); print(d.name, flush=True); input()"
    holder = subprocess.Popen(
        [sys.executable, "-c", hold],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        name = holder.stdout.readline().strip()  # type: ignore[union-attr]
        assert name.startswith("jacobian-"), "the holder did not start"
        (shm / f"{name}-77-1").touch()
        assert rundir.sweep_orphans(str(tmp), str(shm)) == (0, 0)
        holder.kill()  # SIGKILL: the kernel drops the lock, nothing else runs
        holder.wait()
        old = time.time() - 60
        os.utime(tmp / name, (old, old))
        assert rundir.sweep_orphans(str(tmp), str(shm)) == (1, 1)
        assert list(tmp.iterdir()) == [] and list(shm.iterdir()) == []
    finally:
        holder.kill()


def test_a_directory_just_made_is_not_taken_for_a_leftover(tmp_path: Path) -> None:
    """A supervisor between mkdtemp and its flock: no lock file yet, but seconds old."""
    starting = tmp_path / "jacobian-123-fresh1"
    starting.mkdir()
    assert rundir.owned(starting)
    old = time.time() - 60
    os.utime(starting, (old, old))
    assert not rundir.owned(starting)
