"""`python -m app.serve.healthcheck`: the container's health check. Exit status 0 when `/health/ready`
answers 200 on the port the service was configured with (`JACOBIAN_PORT`), 1 otherwise, with
the reason on stderr. Docker's HEALTHCHECK and compose's run it, so neither writes a port."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from app.config import Settings

# A service bound to every address is reached on loopback.
_ANY_ADDRESS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def ready_url(settings: Settings) -> str:
    host = _ANY_ADDRESS.get(settings.host, settings.host)
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.port}/health/ready"


def check(url: str, timeout_s: float = 4.0) -> str | None:
    """None when ready, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return None if response.status == 200 else f"{url} answered {response.status}"
    except urllib.error.HTTPError as err:
        return f"{url} answered {err.code}: {err.read(500).decode(errors='replace')}"
    except (OSError, urllib.error.URLError) as err:
        return f"{url}: {err}"


def main() -> int:
    problem = check(ready_url(Settings()))
    if problem:
        print(f"not ready: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
