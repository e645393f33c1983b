"""Settings from environment variables with the JACOBIAN_ prefix (pydantic-settings)."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.system import cgroup_cpus, default_budget

DType = Literal["float32", "float64"]
# Set by the supervisor for the processes it starts, never by a user.
INTERNAL_SETTINGS = frozenset({"runtime_dir", "shm_prefix", "engines"})
# Defaults that depend on the machine or container: deployments leave them empty, or say "auto"
# (docker-compose.yml does: podman-compose 1.0.3 cannot substitute an empty default), to get them.
COMPUTED_SETTINGS = frozenset({"workers", "devices", "memory_budget_bytes"})
_COMPUTED = ("", "auto", None)


class Settings(BaseSettings):
    """Every knob of the service; see the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="JACOBIAN_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    max_request_bytes: int = Field(16 * 2**20, gt=0, description="Largest accepted request body.")
    max_push_bytes: int = Field(512 * 2**20, gt=0, description="Largest body of a push of a model's variables.")
    max_output_elements: int = Field(
        2**26, gt=0, description="Largest output (e.g. B·A·A·F for J) for an npz response."
    )
    max_json_output_elements: int = Field(
        2**22, gt=0, description="Largest output for a JSON response (JSON text is ~20 bytes/number)."
    )
    default_dtype: DType = "float32"

    max_batch_rows: int = Field(256, gt=0, description="Most rows (states) stacked into one TF call.")
    max_pending: int = Field(64, gt=0, description="Most requests running or waiting; beyond it, 503.")
    deadline_s: float = Field(30.0, gt=0, description="Per-request compute deadline; beyond it, 504.")
    xla: bool = Field(True, description="Serve shapes asked for repeatedly with XLA-compiled functions.")
    xla_after: int = Field(2, gt=0, description="Requests of one shape before it is compiled with XLA.")
    xla_max_shapes: int = Field(64, ge=0, description="Most shapes compiled with XLA (bounds its cache).")
    max_versions: int = Field(2, ge=1, description="Versions of a model's variables kept: the newest and those before.")

    memory_budget_bytes: int = Field(
        default_factory=lambda: default_budget(),
        gt=0,
        description="Most memory requests in flight may claim, engine and workers together; default: half "
        "the container's memory limit, else a quarter of physical memory.",
    )
    memory_wait_s: float = Field(
        10.0, gt=0, description="Longest a request waits for memory to be released; past it, 503 + Retry-After."
    )
    request_read_timeout_s: float = Field(
        30.0, gt=0, description="Deadline for receiving a whole request, headers and body; past it, 408."
    )
    max_connections: int = Field(
        4096, gt=0, description="Most open connections (and requests) per HTTP worker; past it, 503."
    )

    api_key: SecretStr | None = Field(None, description="When set, compute endpoints require it.")

    workers: int = Field(
        default_factory=lambda: _cores(), ge=1, description="HTTP worker processes; default: one per usable CPU."
    )
    devices: str | None = Field(
        None, description="GPUs to run one engine process each on, e.g. '0,1'; default: all visible, else the CPU."
    )
    model_repository: str | None = Field(
        None,
        description="A folder of SavedModels, <model>/<version>/ as TF Serving reads them; each model's "
        "highest version is loaded. Models are code: keep it read-only.",
    )
    shm_dir: str = Field("/dev/shm", description="Where big inputs and answers pass between workers and engines.")
    # Set by the supervisor for the processes it starts; unset, the app runs TensorFlow in-process.
    runtime_dir: str | None = None
    shm_prefix: str = "jacobian"
    engines: int = Field(1, ge=1, description="Engine processes the workers talk to (set by the supervisor).")

    @field_validator("api_key", "model_repository", mode="before")
    @classmethod
    def _empty_means_off(cls, value: object) -> object:
        # An empty JACOBIAN_API_KEY or _MODEL_REPOSITORY (a ConfigMap's, an .env's) means unset.
        return None if value in ("", None) else value

    @field_validator("devices", mode="before")
    @classmethod
    def _auto_means_every_visible_gpu(cls, value: object) -> object:
        return None if value in _COMPUTED else value

    @field_validator("workers", mode="before")
    @classmethod
    def _auto_means_one_per_core(cls, value: object) -> object:
        return _cores() if value in _COMPUTED else value

    @field_validator("memory_budget_bytes", mode="before")
    @classmethod
    def _auto_means_the_default_budget(cls, value: object) -> object:
        # Kubernetes' ConfigMap lists every setting; an empty one keeps the default (the pod's limit).
        return default_budget() if value in _COMPUTED else value


def _cores() -> int:
    """CPUs this process may use: its CPU affinity, or the container's CPU limit if lower (a pod
    limited to 2 CPUs on a 64-core node must not start 64 workers)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_cpus()
    return max(1, min(usable, quota) if quota else usable)


@lru_cache
def get_settings() -> Settings:
    return Settings()
