"""The Jacobian service. Importing the package first sets the environment TensorFlow must start
with (see `app.tensorflow_env`), whichever module is the entry point.

The folders follow a request, top to bottom, and imports run only downward (import-linter
contracts in pyproject.toml, checked by `make test`); TensorFlow is imported under `engine` alone.

serve/ (the processes)
    supervisor      `python -m app`: starts, restarts and stops the engine processes and the HTTP workers.
    engine_process  one engine process: the socket driver of the scheduling policy, over `ipc`.
    rundir          the supervisor's runtime directory and the lock that says it is alive.
    logs            one log format and level for every process, the spawned workers too.
    healthcheck     `python -m app.serve.healthcheck`: the containers' health check.

http/ (the HTTP workers: decode, compute, encode)
    app             the ASGI app and its lifespan (in-process engine or engine processes).
    runtime         what the app holds while it runs, as one typed object.
    connection      the HTTP connection: read deadline and connection cap.
    routes          the native endpoints, one per endpoint of each model; health and metrics.
    catalog         GET /models and /models/{name}: every model served, with its card.
    reading         a request's media type, body (against the limit) and Problem.
    auth            the API key.
    hangup          work dropped when the client hangs up.
    responses       an answer encoded and sent in pieces; releases its memory claim.
    openapi         the OpenAPI document and its fragments.
    handlers        domain exceptions to HTTP responses, in one place.
    schemas         pydantic models of the JSON bodies, per endpoint.
    observability   request ids, the request log line, Prometheus metrics.
    v2/routes       the Open Inference Protocol's endpoints.
    v2/documents    its documents, as pydantic models.
    v2/protocol     its models (one per endpoint of each model), requests to Problems, answers to bodies.

service/ (no web, no TensorFlow)
    dataplane       what a request computes: limits, memory claim, engine call, shaping (`Service.serve`).
    problems        a validated Problem from JSON lists or npz arrays.
    outputs         output-size limits and finiteness of results.
    codec           bytes ↔ arrays, by media type; JSON.
    npz             npz in and out without copies (members read in place, answers written from their memory).
    budget          the memory estimate of a request.

scheduling/ (no TensorFlow, no sockets)
    policy          the one policy: pending cap, admission by memory, memory wait, batch taking, slicing back.
    batcher         its asyncio driver in process (the engine process's loop is the other).
    ledger          the memory claims of requests in flight against the budget.

ipc/ (between the HTTP workers and the engine processes)
    messages        the typed messages, refusals among them (each maps to a domain exception).
    wire            framing over a Unix socket, and the engine's server.
    shm             shared-memory segments for big inputs and answers.
    client          an HTTP worker's connection to the engine processes.

engine/ (TensorFlow alone)
    models          the models, by name: a TensorFlow function each; `register` adds one.
    kernels         the derivative kernels by autodiff, over any model.
    derivatives     the Engine: traced functions per (model, operation, dtype) and the XLA policy.
    tensors         arrays into TensorFlow (in place from shared memory) and NumPy views out.
    repository      a model repository's SavedModels loaded, described and probed for gradients.
    signatures      a repository model's derivatives, on its inlined graph.
    model_calls     a repository model's calls: traced on first use, timed, run in pieces to a deadline.
    calibration     a repository model's memory peak per operation, measured on first use within the limits.
    costs           how long a repository model's calls take: refusals and pieces against the deadline.

Shared by every layer (they import none of it)
    config          settings from JACOBIAN_* environment variables.
    system          the machine's facts: cgroup limits, physical memory, the default budget.
    ops             each engine operation's contract (inputs, outputs, shapes, memory factors); the models.
    endpoints       each served endpoint, one description: members, outputs, docs, size texts.
    catalog         a repository model's card: signature, variables, state, undefined gradients.
    errors          domain exceptions, each with its status.
    lifeline        child processes that die with their parent (PR_SET_PDEATHSIG).
    tensorflow_env  the environment TensorFlow must start with (oneDNN held to AVX2).

A request's path, under `python -m app`: http/connection (deadline) → http/routes (or v2/routes)
→ http/reading (body, Problem from service/problems and service/codec) → service/dataplane
(limits from service/outputs, claim from service/budget) → ipc/client (a `Compute` message,
inputs inline or in ipc/shm) → [engine process] serve/engine_process → scheduling/policy (admit,
batch) → engine/derivatives (engine/kernels over engine/models) → an `Answer` back through
ipc/wire → service/dataplane (shape, check) → http/responses (encode, send, release the claim).
In process (`uvicorn app.http.app:app`), scheduling/batcher takes ipc's place.
"""

from app import tensorflow_env

tensorflow_env.apply()
