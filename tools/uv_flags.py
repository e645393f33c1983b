"""`uv pip install`'s index options, from pip's configuration (`pip config list`: its files, then
PIP_* variables, which win). `make` installs with uv, which resolves and installs in parallel (a
fresh venv here: 30 s against pip's 70), but reads neither pip's files nor its variables: this
hands it the indexes, links and constraints pip would use."""

from __future__ import annotations

import shlex
import subprocess
import sys

OPTIONS = ("index-url", "extra-index-url", "find-links", "constraint")


def flags(pip_config: str) -> list[str]:
    found: dict[str, list[str]] = {}
    lines = pip_config.splitlines()
    for line in sorted(lines, key=lambda ln: ln.startswith(":env:")):  # the variables last: they win
        key, _, value = line.partition("=")
        option = key.rsplit(".", 1)[-1]
        if option in OPTIONS and value:
            found[option] = " ".join(shlex.split(value)).split()
    # pip takes the best version across all its indexes; uv, by default, the first index's.
    out = ["--index-strategy", "unsafe-best-match"]
    for option in OPTIONS:
        for value in found.get(option, []):
            out += [f"--{option}", value]
    return out


if __name__ == "__main__":
    config = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    print(shlex.join(flags(config)))
