"""`python -m app`: the one start command, used by `make serve` and the container's CMD."""

import logging

import uvicorn

from app.config import get_settings


def main() -> None:
    s = get_settings()
    # One process: TensorFlow and the batcher own the device; scale with one container per GPU.
    # access_log off: app.observability logs each request once, with its request id.
    logging.basicConfig(level=s.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvicorn.run("app.main:app", host=s.host, port=s.port, log_level=s.log_level, workers=1, access_log=False)


if __name__ == "__main__":
    main()
