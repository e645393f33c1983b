"""client/ (jacobian_client), installed as a user installs it, against a live server: every method,
sync and async, both transports, one state and a batch, float32 and float64, equal to the raw
HTTP answers; the server's errors as `JacobianServiceError`; retries on 503 and dead ports."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jacobian_client
import numpy as np
import pytest
from jacobian_client import AsyncClient, Client, JacobianServiceError, _core

from tests.support import servers
from tests.support.helpers import NPZ, load_npz, metric, npz_bytes, operation_inputs
from tests.support.servers import LiveServer

METHODS = {
    "jacobian": ("X", "Y"),
    "hessian": ("X", "Y"),
    "hvp": ("X", "Y", "V"),
    "vjp": ("X", "Y", "U"),
    "jvp": ("X", "Y", "V"),
}


def _raw(url: str, method: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The answer by hand: an npz post with httpx."""
    r = httpx.post(f"{url}/{method}", content=npz_bytes(**arrays), headers={"content-type": NPZ, "accept": NPZ})
    assert r.status_code == 200, r.text
    return load_npz(r.content)


def test_the_client_is_the_installed_package_not_the_source_tree() -> None:
    installed = Path(jacobian_client.__file__).resolve()
    assert "site-packages" in installed.parts, installed
    assert (installed.parent / "py.typed").exists()


@pytest.fixture(scope="module")
def graph_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server that always takes TensorFlow's graph path. With XLA on, a shape's third request
    may run XLA-compiled and differ from the first in the last bit; the client must hand back
    exactly what the server computed, so both sides of the comparison must be one computation."""
    with servers.running(tmp_path_factory.mktemp("graph"), {"JACOBIAN_XLA": "false"}) as server:
        yield server


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("transport", ["npz", "json"])
def test_every_method_sync_and_async_equals_the_raw_answer(
    graph_server: LiveServer, rng: np.random.Generator, method: str, transport: str
) -> None:
    url = graph_server.url
    for batch in (False, True):
        for dtype in ("float64", "float32"):
            arrays = operation_inputs(method, batch, dtype, rng)
            raw = _raw(url, method, arrays)
            with Client(url, transport=transport) as client:
                got = getattr(client, method)(**arrays)

            async def run_async(arrays: dict[str, np.ndarray] = arrays) -> Any:
                async with AsyncClient(url, transport=transport) as client:
                    return await getattr(client, method)(**arrays)

            got_async = asyncio.run(run_async())
            for result in (got, got_async):
                assert result.dtype == dtype and result.device == str(raw["device"])
                for name, want in raw.items():
                    if name in ("dtype", "device"):
                        continue
                    value = getattr(result, name)
                    assert value.dtype == want.dtype and value.shape == want.shape, name
                    if dtype == "float64":
                        np.testing.assert_array_equal(value, want, err_msg=name)
                    else:
                        np.testing.assert_allclose(value, want, rtol=1e-6, atol=1e-7, err_msg=name)


def test_options_reach_the_server(live_server: LiveServer, rng: np.random.Generator) -> None:
    X, Y = rng.normal(size=(3, 5)), rng.normal(size=(4, 5)) / 3
    U = rng.normal(size=(4, 3))
    for transport in ("npz", "json"):
        with Client(live_server.url, transport=transport) as client:
            both = client.jacobian(X, Y, wrt=("X", "Y"))
            assert both.J is not None and both.J_Y is not None and both.J_Y.shape == (4, 3, 5)
            only_y = client.jacobian(X, Y, wrt=["Y"])
            assert only_y.J is None and only_y.J_Y is not None
            # Not bit for bit: a first call of a shape runs a row at a time (app.engine.costs).
            np.testing.assert_allclose(only_y.J_Y, both.J_Y, rtol=1e-12, atol=1e-15)
            summed = client.vjp(X, Y, U, sum_states=True)
            per_state = client.vjp(X, Y, U)
            np.testing.assert_allclose(summed.UJ, per_state.UJ.sum(axis=0), rtol=1e-12, atol=1e-15)
            assert client.jacobian(X.tolist(), Y[0].tolist(), dtype="float32").dtype == "float32"
            assert client.health()["status"] == "ready"


def test_a_bad_input_raises_the_servers_422_and_message(live_server: LiveServer) -> None:
    X, Y = np.ones((2, 4)), np.ones(5)  # Y does not match X's columns
    raw = httpx.post(live_server.url + "/jacobian", json={"X": X.tolist(), "Y": Y.tolist()}).json()
    for transport in ("npz", "json"):
        with Client(live_server.url, transport=transport) as client, pytest.raises(JacobianServiceError) as caught:
            client.jacobian(X, Y)
        err = caught.value
        assert err.status == 422 and err.code == "invalid_input"
        assert err.message == raw["message"] and err.details


def test_a_dead_port_raises_after_the_retries_within_the_timeout() -> None:
    url = f"http://127.0.0.1:{servers.free_port()}"
    start = time.monotonic()
    with Client(url, retries=3, timeout=5.0) as client, pytest.raises(JacobianServiceError) as caught:
        client.jacobian([[1.0, 2.0]], [1.0, 2.0])
    assert time.monotonic() - start < 5.0
    assert caught.value.status is None and "after 4 attempt(s)" in caught.value.message
    with Client(url, retries=0) as client, pytest.raises(JacobianServiceError, match="after 1 attempt"):
        client.jacobian([[1.0, 2.0]], [1.0, 2.0])


def test_a_server_at_capacity_is_retried_until_it_answers(tmp_path: Path, rng: np.random.Generator) -> None:
    """With one request allowed to wait, a flood of 12 gets 503s; the client honours Retry-After
    and every call succeeds. With retries off, the same flood fails some."""
    X, Y = rng.normal(size=(48, 256)), rng.normal(size=256) / 16
    env = {"JACOBIAN_MAX_PENDING": "1", "JACOBIAN_MAX_BATCH_ROWS": "1"}
    with servers.running(tmp_path, env) as server:

        async def flood(retries: int) -> list[Any]:
            async with AsyncClient(server.url, retries=retries, timeout=120) as client:
                calls = (client.jacobian(X, Y, dtype="float64") for _ in range(12))
                return await asyncio.gather(*calls, return_exceptions=True)

        without = asyncio.run(flood(0))
        refused = [r for r in without if isinstance(r, JacobianServiceError)]
        assert refused and all(e.status == 503 and e.code == "overloaded" for e in refused)
        before = metric(
            httpx.get(server.url + "/metrics").text, "jacobian_rejected_requests_total", reason="overloaded"
        )
        with_retries = asyncio.run(flood(10))
        assert all(not isinstance(r, BaseException) for r in with_retries), with_retries
        after = metric(httpx.get(server.url + "/metrics").text, "jacobian_rejected_requests_total", reason="overloaded")
        assert after > before  # refused on the way, then answered
        want = _raw(server.url, "jacobian", {"X": X, "Y": Y})
        for r in with_retries:  # graph or XLA-compiled, as the engine chose: equal to rounding
            np.testing.assert_allclose(r.J, want["J"], rtol=1e-12, atol=1e-15)


# ---- the retry policy, without a server


def _response(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers)


def test_503_waits_at_least_retry_after_capped_and_jittered() -> None:
    delays = [_core.retry_delay(0, _response(503, **{"retry-after": "2"})) for _ in range(200)]
    assert all(d is not None and 2.0 <= d <= 2.5 for d in delays) and len(set(delays)) > 1
    capped = _core.retry_delay(0, _response(503, **{"retry-after": "3600"}))
    assert capped is not None and capped <= _core.RETRY_AFTER_CAP_S * 1.25


@pytest.mark.parametrize("status", [400, 401, 413, 422, 500, 504])
def test_other_statuses_are_not_retried(status: int) -> None:
    assert _core.retry_delay(0, _response(status)) is None


def test_failed_connections_back_off() -> None:
    first, third = _core.retry_delay(0, None), _core.retry_delay(2, None)
    assert first is not None and third is not None and third > first


def test_inputs_must_be_numbers() -> None:
    with pytest.raises(JacobianServiceError, match="not an array of numbers"):
        _core.as_array(["a", "b"], "X")
    assert _core.as_array([[1, 2]], "X").dtype == np.float64
    assert _core.as_array(np.ones(2, np.float32), "Y").dtype == np.float32


def test_the_api_key_goes_as_a_bearer_token_and_bad_options_are_refused() -> None:
    with Client("http://127.0.0.1:1", api_key="s3cret") as client:
        assert client._http.headers["authorization"] == "Bearer s3cret"
    with pytest.raises(JacobianServiceError, match="transport"):
        Client(transport="xml")
    with pytest.raises(JacobianServiceError, match="dtype"), Client("http://127.0.0.1:1") as client:
        client.jacobian([[1.0]], [1.0], dtype="float16")
    with pytest.raises(JacobianServiceError, match="wrt"), Client("http://127.0.0.1:1") as client:
        client.jacobian([[1.0]], [1.0], wrt=("Z",))
