"""The Jacobian service. Importing the package first sets the environment TensorFlow must start
with (see `app.tensorflow_env`), whichever module is the entry point.

The folders follow a request, top to bottom, and imports run only downward (import-linter
contracts in pyproject.toml, checked by `make test`); TensorFlow is imported under `engine` alone.

serve/ (the processes)
    supervisor      `python -m app`: starts, restarts and stops the engine processes and the HTTP workers.
    engine_process  one engine process: its loop, batcher and memory ledger, over `ipc`.
    rundir          the supervisor's runtime directory and the lock that says it is alive.
    logs            one log format and level for every process, the spawned workers too.
    healthcheck     `python -m app.serve.healthcheck`: the containers' health check.

http/ (the HTTP workers: decode, compute, encode)
    app             the ASGI app and its lifespan (in-process engine or engine processes).
    runtime         what the app holds while it runs, as one typed object.
    connection      the HTTP connection: read deadline and connection cap.
    routes          the native endpoints; health and metrics.
    reading         a request's media type, body (against the limit) and Problem.
    auth            the API key.
    hangup          work dropped when the client hangs up.
    responses       an answer encoded and sent in pieces; releases its memory claim.
    openapi         the OpenAPI document and its fragments.
    handlers        domain exceptions to HTTP responses, in one place.
    schemas         pydantic models of the JSON bodies.
    observability   request ids, the request log line, Prometheus metrics.
    v2/routes       the Open Inference Protocol's endpoints.
    v2/protocol     its bodies: metadata, tensors in and out, its model table.

service/ (no web, no TensorFlow)
    dataplane       what each operation computes: limits, memory claim, engine call, shaping.
    problems        a validated Problem from JSON lists or npz arrays.
    outputs         output-size limits and finiteness of results.
    codec           bytes ↔ arrays: JSON and npz.
    budget          the memory estimate of a request.

scheduling/
    batcher         dynamic batching (in-process) and the rules batches follow.
    ledger          the memory claims of requests in flight against the budget.

ipc/
    wire            framed messages over a Unix socket, shared-memory segments.
    client          an HTTP worker's connection to the engine processes.

engine/
    derivatives     TensorFlow: the traced derivative functions and the XLA policy.

Shared by every layer (they import none of it)
    config          settings from JACOBIAN_* environment variables.
    system          the machine's facts: cgroup limits, physical memory, the default budget.
    ops             the contract of each operation: inputs, outputs, shapes.
    errors          domain exceptions, each with its status.
    lifeline        child processes that die with their parent (PR_SET_PDEATHSIG).
    tensorflow_env  the environment TensorFlow must start with (oneDNN off on AVX-512).
"""

from app import tensorflow_env

tensorflow_env.apply()
