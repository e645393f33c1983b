"""The images, built and run for real with podman (no Docker daemon needed): how containers run
on this machine (found by trying, not assumed), the base image (the real one where it can be
had, else a stand-in made with mmdebstrap), the build, and running containers.

Each step that cannot be taken raises `ContainerStepFailed` naming the step and what the tool
said, so the container check fails loudly instead of passing without having run anything.

`python -m tests.support.containers gpu` builds the GPU image and checks TensorFlow in it
(`make image-gpu`); `... cpu` the CPU image (`make image`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).parent.parent.parent
REAL_BASE = "docker.io/library/python:3.11.11-slim-bookworm"
STAND_IN = "localhost/jacobian-base"
IMAGE = "localhost/jacobian-service"
# What the stand-in must offer, as the real base does: Python 3.11 as `python`, pip, venv, and
# pip allowed to install system-wide (no EXTERNALLY-MANAGED).
STAND_IN_PACKAGES = "python3,python3-pip,python3-venv,python-is-python3,ca-certificates"
# Carried into the stand-in, so that a build behind a TLS-intercepting proxy reaches the index.
HOST_TRUST = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pip.conf", "/etc/xdg/pip"]


class ContainerStepFailed(AssertionError):
    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"container check could not {step}:\n{detail.strip()[-3000:]}")
        self.step = step


def run(cmd: Sequence[str], step: str, timeout_s: float = 120, env: dict[str, str] | None = None, **kw):  # type: ignore[no-untyped-def]
    """Run a command; a failure is the step's failure, with the command's output."""
    try:
        r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout_s, env=env, **kw)
    except FileNotFoundError as err:
        raise ContainerStepFailed(step, f"{cmd[0]} is not installed ({err})") from err
    except subprocess.TimeoutExpired as err:
        raise ContainerStepFailed(step, f"{' '.join(cmd)} took more than {timeout_s:.0f} s") from err
    if r.returncode != 0:
        raise ContainerStepFailed(step, f"$ {' '.join(cmd)}\nexit {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


@dataclass
class Engine:
    """podman with what this machine needs, in a containers.conf every podman call reads
    (podman-compose's too): the OCI runtime that can start a container here, and ulimits
    within the host's hard limits."""

    conf: Path
    runtime: str | None
    ulimits: list[str] | None  # None: podman's own; []: none set, the host's limits inherited
    found: list[str] = field(default_factory=list)  # what was tried and failed, for the report

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(self.conf)}

    def podman(self, *args: str, step: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        return run(["podman", *args], step, timeout_s, env=self.env)  # type: ignore[no-any-return]


def _conf_text(runtime: str | None, ulimits: list[str] | None) -> str:
    lines = ["[containers]"] + ([] if ulimits is None else [f"default_ulimits = {json.dumps(ulimits)}"])
    if runtime:
        lines += ["[engine]", f'runtime = "{runtime}"']
    return "\n".join(lines) + "\n"


def _ulimit_candidates() -> list[list[str] | None]:
    """podman's defaults first (rootful podman raises nofile and nproc past the hard limits of
    some hosts); then none set, so the container inherits the host's; then the host's hard
    limits, with nproc lowered step by step."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    cap = lambda n: n if n != resource.RLIM_INFINITY else 1 << 20  # noqa: E731
    options: list[list[str] | None] = [None, []]
    for procs in (cap(nproc), 32768, 16384, 4096):
        if procs <= cap(nproc):
            options.append([f"nofile={cap(nofile)}:{cap(nofile)}", f"nproc={procs}:{procs}"])
    return options


def detect_engine(probe_image: str, workdir: Path) -> Engine:
    """The first runtime and ulimits with which `probe_image` runs `true`."""
    if not shutil.which("podman"):
        raise ContainerStepFailed("find podman", "podman is not on PATH (`make test` installs Debian's podman)")
    runtimes = [None] + [r for r in ("runc", "crun") if shutil.which(r)]
    conf = workdir / "containers.conf"
    tried: list[str] = []
    for runtime in runtimes:
        for ulimits in _ulimit_candidates():
            conf.write_text(_conf_text(runtime, ulimits))
            engine = Engine(conf, runtime, ulimits)
            try:
                engine.podman("run", "--rm", probe_image, "true", step="start a container", timeout_s=60)
            except ContainerStepFailed as err:
                tried.append(f"runtime {runtime or 'default'}, ulimits {ulimits or 'default'}: {str(err)[-300:]}")
                continue
            engine.found = tried
            return engine
    raise ContainerStepFailed("start any container", "\n".join(tried))


def _stand_in_tag() -> str:
    """The stand-in's tag names its recipe, so a changed recipe (or host trust) is rebuilt."""
    digest = hashlib.sha256(STAND_IN_PACKAGES.encode())
    for path in HOST_TRUST:
        for file in sorted(Path(path).rglob("*")) if Path(path).is_dir() else [Path(path)]:
            if file.is_file():
                digest.update(file.read_bytes())
    return f"{STAND_IN}:bookworm-{digest.hexdigest()[:12]}"


def _image_exists(name: str) -> bool:
    return subprocess.run(["podman", "image", "exists", name], capture_output=True).returncode == 0


def base_image(report: list[str]) -> str:
    """The real base image if it is here or can be pulled, else the mmdebstrap stand-in."""
    if _image_exists(REAL_BASE):
        return REAL_BASE
    pulled = subprocess.run(["podman", "pull", "-q", REAL_BASE], capture_output=True, text=True, timeout=300)
    if pulled.returncode == 0:
        return REAL_BASE
    report.append(f"{REAL_BASE} cannot be pulled ({pulled.stderr.strip()[-200:]}); using a stand-in")
    tag = _stand_in_tag()
    if not _image_exists(tag):
        build_stand_in(tag)
    return tag


def build_stand_in(tag: str) -> None:
    """Debian bookworm with python3 as `python`, pip and venv, from the Debian archive."""
    hooks = ['--customize-hook=rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED']
    for path in HOST_TRUST:
        if Path(path).exists():
            parent = Path(path).parent
            hooks += [f'--customize-hook=mkdir -p "$1"{parent}', f"--customize-hook=copy-in {path} {parent}"]
    with tempfile.TemporaryDirectory() as tmp:
        tar = Path(tmp, "base.tar")
        run(
            ["mmdebstrap", "--variant=apt", f"--include={STAND_IN_PACKAGES}", *hooks, "bookworm", str(tar)],
            "make the stand-in base image with mmdebstrap",
            timeout_s=900,
        )
        run(
            ["podman", "import", "--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["python3"]', str(tar), tag],
            "import the stand-in base image",
            timeout_s=300,
        )


@dataclass
class Built:
    image: str
    base: str
    seconds: float
    size_bytes: int


def build(engine: Engine, variant: str, base: str, timeout_s: float = 3600) -> Built:
    """The image of `variant` (cpu or gpu) from the Dockerfile, in docker format so that its
    HEALTHCHECK is kept (OCI images have none); layers are cached between runs."""
    image = f"{IMAGE}:{variant}"
    start = time.monotonic()
    engine.podman(
        "build", "--format", "docker", "--build-arg", f"BASE={base}", "--build-arg", f"VARIANT={variant}",
        "-t", image, str(ROOT), step=f"build the {variant} image", timeout_s=timeout_s,
    )  # fmt: skip
    seconds = time.monotonic() - start
    size = engine.podman("image", "inspect", "--format", "{{.Size}}", image, step="inspect the image").stdout
    return Built(image, base, seconds, int(size.strip()))


@dataclass
class Container:
    engine: Engine
    name: str
    port: int  # on the host's loopback
    started: float = field(default_factory=time.monotonic)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def podman(self, *args: str, step: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        return self.engine.podman(*args, step=step, timeout_s=timeout_s)

    def inspect(self, template: str) -> str:
        return self.podman("inspect", "--format", template, self.name, step="inspect the container").stdout.strip()

    def logs(self) -> str:
        r = self.podman("logs", self.name, step="read the container's logs")
        return r.stdout + r.stderr

    def exec(self, *cmd: str) -> str:
        return self.podman("exec", self.name, *cmd, step=f"run {' '.join(cmd)} in the container").stdout

    def wait_ready(self, timeout_s: float = 180) -> float:
        """Seconds from `started` until /health/ready said 200."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/health/ready", timeout=2).status_code == 200:
                    return time.monotonic() - self.started
            status = self.inspect("{{.State.Status}}")
            if status not in ("running", "created", "configured", "initialized"):
                raise ContainerStepFailed("keep the container running", f"{status}\n{self.logs()}")
            time.sleep(0.2)
        raise ContainerStepFailed(f"see the container ready in {timeout_s:.0f} s", self.logs())

    def health(self) -> subprocess.CompletedProcess[str]:
        """The image's HEALTHCHECK run once by hand (no systemd here to schedule it)."""
        return subprocess.run(
            ["podman", "healthcheck", "run", self.name], capture_output=True, text=True, timeout=60, env=self.engine.env
        )

    def remove(self) -> None:
        subprocess.run(["podman", "rm", "-f", "-t", "5", self.name], capture_output=True, env=self.engine.env)


def start(
    engine: Engine, image: str, name: str, port: int, env: dict[str, str] | None = None, *extra: str
) -> Container:
    """As users are told to run it: the image's own user, a read-only root with a tmpfs /tmp,
    room in /dev/shm; published on loopback only."""
    container_port = (env or {}).get("JACOBIAN_PORT", "8000")
    subprocess.run(["podman", "rm", "-f", name], capture_output=True, env=engine.env)
    args = ["run", "-d", "--name", name, "--read-only", "--tmpfs", "/tmp", "--shm-size", "2g"]
    args += ["-p", f"127.0.0.1:{port}:{container_port}", *extra]
    for key, value in (env or {}).items():
        args += ["-e", f"{key}={value}"]
    container = Container(engine, name, port)
    engine.podman(*args, image, step=f"start container {name}")
    return container


@contextlib.contextmanager
def running(
    engine: Engine, image: str, name: str, port: int, env: dict[str, str] | None = None, *extra: str
) -> Iterator[Container]:
    container = start(engine, image, name, port, env, *extra)
    try:
        yield container
    finally:
        container.remove()


def _main(variant: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        report: list[str] = []
        base = base_image(report)
        engine = detect_engine(base, Path(tmp))
        built = build(engine, variant, base)
        print("\n".join(report))
        print(f"{built.image}: built in {built.seconds:.0f} s from {base}, {built.size_bytes / 1e9:.2f} GB")
        probe = "import tensorflow as tf; print(tf.__version__, tf.config.list_physical_devices('GPU'))"
        r = engine.podman("run", "--rm", built.image, "python", "-c", probe, step="import TensorFlow in the image")
        print(f"TensorFlow in the image: {r.stdout.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1] if len(sys.argv) > 1 else "cpu"))
