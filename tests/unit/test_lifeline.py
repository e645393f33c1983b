"""app.lifeline: a child started through it dies with its parent, however the parent dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app import lifeline

PARENT = """
import os, signal, subprocess, sys
from app import lifeline
child = subprocess.Popen(lifeline.command([sys.executable, "-c", "import time; time.sleep(600)"]))
print(child.pid, flush=True)
os.kill(os.getpid(), getattr(signal, sys.argv[1]))
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has died; only its exit status waits to be read


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("how", ["SIGKILL", "SIGSEGV", "SIGABRT"])
def test_the_child_dies_when_its_parent_is_killed(how: str) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, how], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    assert parent.wait(60) == -getattr(signal, how)
    deadline = time.monotonic() + 30
    while alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            pytest.fail(f"child {pid} outlived its parent")
        time.sleep(0.01)


def test_a_child_whose_parent_is_already_gone_does_not_start() -> None:
    r = subprocess.run([sys.executable, lifeline.__file__, "1", "true"], capture_output=True, text=True)
    assert r.returncode != 0 and "parent 1 is already gone" in r.stderr


def test_the_child_gets_the_environment_it_is_given() -> None:
    """The launcher must not add the app's TensorFlow settings: the canary's hostile environment
    and the benchmark's configurations depend on it."""
    cmd = lifeline.command([sys.executable, "-c", "import os; print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))"])
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1"}
    assert subprocess.run(cmd, env=env, capture_output=True, text=True).stdout.strip() == "1"
