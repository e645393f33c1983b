"""The Jacobian service. Importing the package first sets the environment TensorFlow must start
with (see `app.tensorflow_env`), whichever module is the entry point.

One job per module; imports run down this list's layers (web → service → engine seam → engine),
and TensorFlow is imported by `engine` alone.

Processes
    __main__        `python -m app`: runs the supervisor.
    supervisor      starts, restarts and stops the engine processes and the HTTP workers.
    engine_process  one engine process: its loop, batcher and memory ledger, over `ipc`.
    lifeline        child processes that die with their parent (PR_SET_PDEATHSIG).
    rundir          the supervisor's runtime directory and the lock that says it is alive.
    logs            one log format and level for every process, the spawned workers too.
    healthcheck     `python -m app.healthcheck`: the containers' health check.
    tensorflow_env  the environment TensorFlow must start with (oneDNN off on AVX-512).

Web (HTTP workers)
    main            the ASGI app and its lifespan (in-process engine or engine processes).
    runtime         what the app holds while it runs, as one typed object.
    protocol        the HTTP connection: read deadline and connection cap.
    routes          the endpoints: decode, compute, encode; health and metrics.
    reading         a request's media type, body (against the limit) and Problem.
    auth            the API key.
    hangup          work dropped when the client hangs up.
    responses       an answer encoded and sent in pieces; releases its memory claim.
    openapi         the OpenAPI document and its fragments.
    handlers        domain exceptions to HTTP responses, in one shape.
    schemas         pydantic models of the JSON bodies.
    observability   request ids, the request log line, Prometheus metrics.

Service (no web, no TensorFlow)
    service         what each operation computes: limits, memory claim, engine call, shaping.
    problems        a validated Problem from JSON lists or npz arrays.
    outputs         output-size limits and finiteness of results.
    codec           bytes ↔ arrays: JSON and npz.
    budget          the memory estimate per request and the ledger of claims.
    errors          domain exceptions, each with its status.
    config          settings from JACOBIAN_* environment variables.
    ops             the contract of each operation: inputs, outputs, shapes.

Engine seam and engine
    batcher         dynamic batching (in-process) and the rules batches follow.
    engine_client   an HTTP worker's connection to the engine processes.
    ipc             the wire: framed messages over a Unix socket, shared-memory segments.
    engine          TensorFlow: the traced derivative functions and the XLA policy.
"""

from app import tensorflow_env

tensorflow_env.apply()
