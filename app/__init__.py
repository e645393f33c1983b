"""The Jacobian service. Importing the package first sets the environment TensorFlow must start
with (see `app.tensorflow_env`), whichever module is the entry point.

The folders follow a request, top to bottom, and imports run only downward (import-linter
contracts in pyproject.toml, checked by `make test`); TensorFlow is imported under `engine` alone.

serve/ (the processes)
    supervisor      `python -m app`: starts, restarts and stops the engine processes and the HTTP workers.
    engine_process  one engine process: the socket driver of the scheduling policy, over `ipc`.
    rundir          the supervisor's runtime directory and the lock that says it is alive.
    pushes          pushed versions on file in it: an engine that restarts makes them again.
    logs            one log format and level for every process, the spawned workers too.
    healthcheck     `python -m app.serve.healthcheck`: the containers' health check.

http/ (the HTTP workers: decode, compute, encode)
    app             the ASGI app and its lifespan (in-process engine or engine processes).
    runtime         what the app holds while it runs, as one typed object; a model's card by name.
    connection      the HTTP connection: read deadline and connection cap.
    model_routes    POST /models/{name}/{operation} (and .../versions/{v}/...): every operation of every
                    model, JSON or npz; PUT and GET /models/{name}/variables: push a version, read one.
    routes          the original endpoints (/jacobian, ...), fronts to the built-in model; health, metrics.
    cards           GET /models and /models/{name}: every model served, with its card.
    reading         a request's media type, body (against the limit), options in the query.
    auth            the API key.
    hangup          work dropped when the client hangs up.
    responses       an answer encoded and sent in pieces; releases its memory claim.
    openapi         the OpenAPI document's fragments and security schemes.
    spec            `python -m app.http.spec`: the committed OpenAPI document.
    model_docs      the models' routes on the docs page, from their cards.
    handlers        domain exceptions to HTTP responses, in one place.
    schemas         pydantic models of the JSON bodies: the original endpoints', a model request, cards.
    observability   request ids, the request log line, Prometheus metrics.
    v2/rest         the Open Inference Protocol's endpoints.
    v2/documents    its documents, as pydantic models.
    v2/model_inference  every model's operations as V2 models (`policy`, `policy.jacobian`, `mlp.vjp`).
    v2/protocol     the original endpoints as V2 models (`jacobian`, ...); tensors in and out, binary data.
    umbridge_routes UM-Bridge's routes (/umbridge/Info, Evaluate, Gradient, ApplyJacobian, ApplyHessian, ...).
    umbridge_docs   UM-Bridge's bodies as pydantic models, with examples: its routes on the docs page.

service/ (no web, no TensorFlow)
    problem         a request to any model, checked against its card: the `Problem` and its `Call`.
    variables       a model's variables given values by a request or a push, checked against its card.
    arrays          a request's arrays: dtype, finiteness, shapes, the sizes a card names.
    dataplane       what a Problem computes: limits, memory claim, deadline, engine call, finiteness,
                    the answer shaped as served (`Service.serve`): every door ends here.
    budget          the memory estimate of a Problem, and its claim.
    front           the original endpoints' requests renamed into the built-in model's calls, and back.
    seed            the original endpoints' requests (X, Y, U, V), validated, in their own words.
    outputs         output-size limits and finiteness of results.
    codec           bytes ↔ arrays, by media type; JSON.
    npz             npz in and out without copies (members read in place, answers written from their memory).
    umbridge        UM-Bridge's models: flat float64 vectors per example, each operation the service's own.

scheduling/ (no TensorFlow, no sockets)
    policy          the one policy: pending cap, admission by memory, memory wait, batch taking, slicing back.
    batcher         its asyncio driver in process (the engine process's loop is the other).
    ledger          the memory claims of requests in flight against the budget.

ipc/ (between the HTTP workers and the engine processes)
    messages        the typed messages, refusals among them (each maps to a domain exception).
    wire            framing over a Unix socket, and the engine's server.
    shm             shared-memory segments for big inputs and answers.
    client          an HTTP worker's connection to one engine process.
    engines         the engine processes a worker talks to: requests to the least busy, pushes to all.

engine/ (TensorFlow alone)
    derivatives     the Engine: one registry of models, the built-in first; what readiness reports.
    builtin         the built-in model `policy`, defined in code: its function and its hook.
    repository      a model repository's SavedModels loaded and described.
    graphs          a SavedModel signature's graph, inlined, imported and probed for gradients; its
                    variables read from values each call gives.
    versions        a model's versions of its variables' values: as loaded, and as pushed.
    kernels         every derivative of a model's function by autodiff, one `Kernel` per call.
    model_calls     a model's calls: traced on first use, timed, run in pieces to a deadline.
    calibration     a model's memory peak per operation, measured on first use within the limits.
    costs           how long a model's calls take: refusals and pieces against the deadline.
    xla             XLA for the models that ask for it: hot shapes compiled, rows padded.
    tensors         arrays into TensorFlow (in place from shared memory) and NumPy views out.

Shared by every layer (they import none of it)
    config          settings from JACOBIAN_* environment variables.
    system          the machine's facts: cgroup limits, physical memory, the default budget.
    catalog         what a model is: its card (signature, variables, state, undefined gradients), the built-in's.
    calls           one operation of one model as the engine runs it (`Call`), and what it returns.
    endpoints       the original endpoints, one description each: members, outputs, shapes, docs, size texts.
    errors          domain exceptions, each with its status.
    lifeline        child processes that die with their parent (PR_SET_PDEATHSIG).
    tensorflow_env  the environment TensorFlow must start with (oneDNN held to AVX2).

A request's path, under `python -m app`: http/connection (deadline) → http/model_routes (or
http/routes and service/front for the original endpoints, or v2/rest) → http/reading (body) →
service/problem (checked against the model's card, from http/runtime; its variables by
service/variables) → service/dataplane (limits from service/outputs, claim from service/budget) →
ipc/engines → ipc/client (a `Compute` message carrying the `Call`, inputs inline or in ipc/shm) →
[engine process] serve/engine_process (pinned to a version) → scheduling/policy (admit, batch) →
engine/derivatives → engine/model_calls (engine/versions' values; engine/kernels over
engine/builtin or engine/graphs; engine/xla) → an `Answer` message back through ipc/wire → service/dataplane (check,
shape) → http/responses (encode, send, release the claim). In process (`uvicorn app.http.app:app`),
scheduling/batcher takes ipc's place.
"""

from app import tensorflow_env

tensorflow_env.apply()
