"""`python -m app`: the one start command, used by `make serve` and the container's CMD."""

import uvicorn

from app.config import get_settings


def main() -> None:
    s = get_settings()
    # One process: TensorFlow and the batcher own the device; scale with one container per GPU.
    uvicorn.run("app.main:app", host=s.host, port=s.port, log_level=s.log_level, workers=1)


if __name__ == "__main__":
    main()
