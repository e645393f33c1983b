"""One log format and level for every process. The HTTP workers are spawned by uvicorn, which
configures logging in each from its `log_config`: a `basicConfig` in the supervisor never reaches
them (that is how the request log lines were lost), so the `app` loggers ride in that config."""

from __future__ import annotations

import copy
import logging.config
from typing import Any

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def _app_logging(level: str) -> dict[str, Any]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"app": {"format": FORMAT}},
        "handlers": {"app": {"class": "logging.StreamHandler", "formatter": "app", "stream": "ext://sys.stderr"}},
        "loggers": {"app": {"handlers": ["app"], "level": level.upper(), "propagate": False}},
    }


def configure(level: str) -> None:
    """This process's `app.*` loggers (the supervisor's, an engine's)."""
    logging.config.dictConfig(_app_logging(level))


def uvicorn_log_config(level: str) -> dict[str, Any]:
    """uvicorn's own logging config with the `app.*` loggers added, for the workers it spawns."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    ours = _app_logging(level)
    for section in ("formatters", "handlers", "loggers"):
        config[section].update(ours[section])
    return config
