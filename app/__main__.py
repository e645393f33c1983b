"""`python -m app`: the one start command, used by `make serve` and the container's CMD."""

from app.serve.supervisor import main

if __name__ == "__main__":
    main()
