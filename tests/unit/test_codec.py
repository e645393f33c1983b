"""app/service/codec.py and app/service/npz.py: bytes ↔ arrays, both transports."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import numpy as np
import orjson
import pytest

from app.errors import InvalidInput, MalformedBody, TooLarge
from app.http.schemas import JacobianRequest
from app.service import codec, npz, seed
from tests.support.helpers import npz_bytes


def _body(encoded: npz.Body) -> bytes:
    data = b"".join(bytes(p) for p in encoded.parts)
    assert len(data) == encoded.size
    return data


def test_npz_answer_reads_back_with_numpy_and_shares_the_arrays_memory(rng: np.random.Generator) -> None:
    J = rng.normal(size=(2, 3, 3, 4))
    W = rng.normal(size=(2, 3)).astype(np.float32)
    encoded = npz.write({"W": W, "J": J}, {"dtype": "float64", "device": "/device:CPU:0"})
    assert any(np.shares_memory(np.frombuffer(p, np.uint8), J) for p in encoded.parts)  # not copied
    with np.load(io.BytesIO(_body(encoded))) as archive:
        np.testing.assert_array_equal(archive["J"], J)
        np.testing.assert_array_equal(archive["W"], W)
        assert str(archive["dtype"]) == "float64" and str(archive["device"]) == "/device:CPU:0"


def test_a_broadcast_hessian_is_written_block_by_block_and_reads_back_whole(rng: np.random.Generator) -> None:
    H_lse = rng.normal(size=(1, 2, 3, 2, 3))
    H = np.broadcast_to(H_lse[:, None], (1, 4, 2, 3, 2, 3))
    encoded = npz.write({"H": H}, {})
    with np.load(io.BytesIO(_body(encoded))) as archive:
        np.testing.assert_array_equal(archive["H"], H)
    assert encoded.size < H.nbytes + 4096  # the archive holds H once, no more


def test_the_npz_stream_is_a_valid_zip_with_checksums() -> None:
    encoded = npz.write({"W": np.arange(6.0).reshape(2, 3)}, {})
    with zipfile.ZipFile(io.BytesIO(_body(encoded))) as archive:
        assert archive.testzip() is None and archive.namelist() == ["W.npy"]


def test_json_answer_is_orjson_of_the_arrays() -> None:
    out = orjson.loads(codec.encode_json({"W": np.array([0.5, -1.0])}, {"dtype": "float64"}))
    assert out == {"W": [0.5, -1.0], "dtype": "float64"}


def test_decode_npz_takes_the_widest_dtype_unless_told() -> None:
    body = npz_bytes(X=np.ones((2, 3), np.float32), Y=np.ones(3, np.float64))
    assert seed.from_npz(body, ("X", "Y"), None, 1 << 20).dtype == "float64"
    assert seed.from_npz(body, ("X", "Y"), "float32", 1 << 20).dtype == "float32"


@pytest.mark.parametrize(
    "body,error",
    [
        (b"", MalformedBody),
        (b"not a zip", MalformedBody),
        (npz_bytes(X=np.ones((2, 3))), InvalidInput),  # Y missing
        (npz_bytes(X=np.ones((2, 3)), Y=np.ones(3), Z=np.ones(1)), InvalidInput),
        (npz_bytes(X=np.ones((2, 3), np.int64), Y=np.ones(3)), InvalidInput),
    ],
)
def test_decode_npz_refuses_what_is_not_a_problem(body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        seed.from_npz(body, ("X", "Y"), None, 1 << 20)


def _savez(saver: Any, **arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    saver(buf, **arrays)
    return buf.getvalue()


@pytest.mark.parametrize("saver", [np.savez, np.savez_compressed], ids=["stored", "compressed"])
@pytest.mark.parametrize(
    "layout",
    [
        lambda a: a,
        lambda a: np.asfortranarray(a),
        lambda a: a.astype(a.dtype.newbyteorder(">")),
    ],
    ids=["C order", "Fortran order", "big-endian"],
)
def test_npz_members_read_back_exactly_however_numpy_wrote_them(
    rng: np.random.Generator, saver: Any, layout: Any
) -> None:
    X, Y = rng.normal(size=(3, 5)), rng.normal(size=(2, 5))
    p = seed.from_npz(_savez(saver, X=layout(X), Y=layout(Y)), ("X", "Y"), None, 1 << 20)
    np.testing.assert_array_equal(p.X, X)
    np.testing.assert_array_equal(p.Y, Y)


def test_stored_members_are_read_in_place_not_copied(rng: np.random.Generator) -> None:
    body = _savez(np.savez, X=rng.normal(size=(64, 32)), Y=rng.normal(size=32))
    p = seed.from_npz(body, ("X", "Y"), None, 1 << 20)
    assert np.shares_memory(p.X, np.frombuffer(body, np.uint8))


def test_a_corrupt_member_is_refused_by_its_checksum(rng: np.random.Generator) -> None:
    body = bytearray(_savez(np.savez, X=rng.normal(size=(8, 4)), Y=rng.normal(size=4)))
    at = body.index(b"X.npy") + 200  # inside X's data, after its .npy header
    body[at] ^= 0x01  # one bit, still a finite float64: only the CRC-32 can tell
    with pytest.raises(MalformedBody, match="CRC-32"):
        seed.from_npz(bytes(body), ("X", "Y"), None, 1 << 20)


def test_a_truncated_archive_is_malformed(rng: np.random.Generator) -> None:
    body = _savez(np.savez, X=rng.normal(size=(8, 4)), Y=rng.normal(size=4))
    with pytest.raises(MalformedBody):
        seed.from_npz(body[: len(body) // 2], ("X", "Y"), None, 1 << 20)


def test_a_single_npy_array_is_refused_with_advice() -> None:
    buf = io.BytesIO()
    np.save(buf, np.ones(3))
    with pytest.raises(MalformedBody, match=r"single \.npy"):
        seed.from_npz(buf.getvalue(), ("X", "Y"), None, 1 << 20)


def test_a_compressed_member_that_expands_past_the_limit_is_refused_before_reading() -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, X=np.zeros((1000, 1000)), Y=np.zeros(1000))
    with pytest.raises(TooLarge):
        seed.from_npz(buf.getvalue(), ("X", "Y"), None, 1 << 20)


def test_decode_json_reports_schema_errors_with_their_location() -> None:
    with pytest.raises(InvalidInput) as err:
        seed.from_json(b'{"X": [[1, "a"]], "Y": [1, 2]}', JacobianRequest, "float32")
    assert err.value.details and err.value.details[0]["loc"][:2] == ["X", 0]


def test_the_crc32_zipfile_uses_is_zlibs_crc32(rng: np.random.Generator) -> None:
    """app.service.npz gives zipfile ISA-L's CRC-32 (faster): the same checksum, also when chained."""
    import zlib

    a, b = rng.bytes(100_003), rng.bytes(65_536)
    assert zipfile.crc32(a) == zlib.crc32(a)  # type: ignore[attr-defined]
    assert zipfile.crc32(b, zipfile.crc32(a)) == zlib.crc32(a + b)  # type: ignore[attr-defined]
