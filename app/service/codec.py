"""Bytes <-> arrays: JSON bodies through pydantic's fast JSON path, npz in and out, and
JSON responses serialized straight from NumPy with orjson."""

from __future__ import annotations

import io
import math
import struct
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ValidationError

try:  # ~5x faster than zlib's CRC-32: checking a 12 MB request's members took 5 ms with zlib
    from isal.isal_zlib import crc32

    # zipfile checksums the npz answers it writes with its module's `crc32`, zlib's: encoding an
    # 8 MB answer took 1.8 ms here, 0.5 ms with ISA-L's. The same CRC-32 and the same results,
    # for every zipfile use in the process.
    zipfile.crc32 = crc32  # type: ignore[attr-defined]
except ImportError:  # no wheel for this platform: the same checksum, slower
    from zlib import crc32

from app import ops
from app.errors import InvalidInput, MalformedBody, TooLarge
from app.service.problems import (
    FLOAT_DTYPES,
    Problem,
    finite_as,
    from_lists,
    from_named,
    with_cotangents,
    with_tangents,
)

JSON = "application/json"
NPZ = "application/x-npz"

# The tags of the JSON body's unions (app.http.schemas), left out of error locations.
UNION_TAGS = ("state", "batch", "vector", "matrix", "tensor3")


def validation_details(err: ValidationError) -> list[dict[str, Any]]:
    # loc and msg only: echoing `input` back could return megabytes of the request.
    return [
        {"loc": [part for part in e["loc"] if part not in UNION_TAGS], "msg": e["msg"]}
        for e in err.errors(include_url=False)
    ]


def decode_json(body: bytes, model: type[BaseModel], default_dtype: str, products: str | None = None) -> Problem:
    """Parse and validate a JSON body into a Problem; 400 if not JSON, 422 if not a valid problem.
    `products`: ops.VJP or ops.JVP when the body carries cotangents U or tangents V with a K axis."""
    if not body.strip():
        raise MalformedBody("The request body is empty; send a JSON object with X and Y")
    try:
        req = model.model_validate_json(body)
    except ValidationError as err:
        details = validation_details(err)
        if any(e["type"] == "json_invalid" for e in err.errors()):
            raise MalformedBody(f"The request body is not valid JSON: {details[0]['msg']}", details) from None
        summary = "; ".join(f"{'.'.join(map(str, d['loc'])) or 'body'}: {d['msg']}" for d in details[:5])
        raise InvalidInput(f"The request does not match the schema: {summary}", details) from None
    dtype = req.dtype or default_dtype  # type: ignore[attr-defined]
    p = from_lists(
        req.X,  # type: ignore[attr-defined]
        req.Y,  # type: ignore[attr-defined]
        dtype,
        V=None if products else getattr(req, "V", None),
        wrt=getattr(req, "wrt", ("X",)),
    )
    if products == ops.VJP:
        return with_cotangents(p, finite_as(req.U, "U", dtype), req.sum_states)  # type: ignore[attr-defined]
    if products == ops.JVP:
        return with_tangents(p, finite_as(req.V, "V", dtype))  # type: ignore[attr-defined]
    return p


def decode_npz(
    body: bytes,
    names: tuple[str, ...],
    dtype: str | None,
    max_bytes: int,
    products: str | None = None,
    sum_states: bool = False,
    wrt: tuple[str, ...] = ("X",),
) -> Problem:
    """An .npz holding `names` (X, Y[, V]) as float32/float64 arrays -> Problem.

    The computation's dtype is the `dtype` argument if given, else the widest of the arrays'.
    """
    if not body:
        raise MalformedBody("The request body is empty; send an .npz archive holding X and Y")
    if body[:6] == b"\x93NUMPY":
        raise MalformedBody("The body is a single .npy array; send an .npz archive (numpy.savez)")
    try:
        archive = zipfile.ZipFile(io.BytesIO(body))  # BytesIO shares the bytes: nothing is copied
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise MalformedBody(f"The body is not a readable .npz archive ({type(err).__name__})") from None
    with archive:
        arrays = _read_members(body, archive, names, max_bytes)
    return from_named(arrays, dtype, products, sum_states, wrt)


def _read_members(
    body: bytes, archive: zipfile.ZipFile, names: tuple[str, ...], max_bytes: int
) -> dict[str, np.ndarray]:
    members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
    missing = [n for n in names if n not in members]
    unknown = sorted(set(members) - set(names))
    if missing or unknown:
        raise InvalidInput(
            f"The npz must hold exactly {', '.join(names)}; "
            f"missing: {missing or 'none'}, unexpected: {unknown or 'none'}"
        )
    # Compressed members can expand far beyond the body limit: check before decompressing.
    for info in members.values():
        if info.file_size > max_bytes:
            raise TooLarge(
                f"npz member {info.filename} expands to {info.file_size:,} bytes, "
                f"more than the request limit of {max_bytes:,}"
            )
    arrays = {}
    for name in names:
        try:
            a = _stored_view(body, members[name])
            if a is None:  # compressed (numpy.savez_compressed), or an unusual .npy header
                with archive.open(members[name]) as member:
                    a = np.lib.format.read_array(member, allow_pickle=False)
        except (ValueError, OSError, EOFError, struct.error, zipfile.BadZipFile) as err:
            raise MalformedBody(f"npz member {name} is not a readable array ({err})") from None
        if a.dtype.name not in FLOAT_DTYPES:
            raise InvalidInput(f"{name} has dtype {a.dtype}; npz arrays must be float32 or float64")
        arrays[name] = a
    return arrays


_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra length


def _stored_view(body: bytes, info: zipfile.ZipInfo) -> np.ndarray | None:
    """An uncompressed member (what numpy.savez writes) as a read-only view of the body, checked
    against its CRC: numpy.load would copy it twice. None when the member needs numpy.load's way."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:  # compressed or encrypted
        return None
    signature, name_len, extra_len = _LOCAL_HEADER.unpack_from(body, info.header_offset)
    start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
    data = memoryview(body)[start : start + info.compress_size]
    if signature != b"PK\x03\x04" or len(data) != info.compress_size:
        raise zipfile.BadZipFile("a member's local header or data is cut off")
    if crc32(data) != info.CRC:
        raise zipfile.BadZipFile(f"CRC-32 mismatch in {info.filename}: the archive is corrupt")
    header = io.BytesIO(data[:65536])  # an .npy header is far shorter
    version = np.lib.format.read_magic(header)
    if version not in ((1, 0), (2, 0)):
        return None
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran_order, dtype = read_header(header)
    if dtype.hasobject:
        return None  # numpy.load refuses it with its own message (allow_pickle=False)
    count = math.prod(shape)
    offset = header.tell()
    if offset + count * dtype.itemsize != len(data):
        raise ValueError(f"the data holds {len(data) - offset} bytes, not the {count * dtype.itemsize} its header says")
    return np.frombuffer(data, dtype, count, offset).reshape(shape, order="F" if fortran_order else "C")


def encode_json(arrays: dict[str, np.ndarray], meta: dict[str, str]) -> bytes:
    contiguous = {k: np.ascontiguousarray(a) for k, a in arrays.items()}
    return orjson.dumps({**contiguous, **meta}, option=orjson.OPT_SERIALIZE_NUMPY)


@dataclass(frozen=True)
class Body:
    """An encoded answer as buffers to send one after another, `size` bytes in all."""

    parts: list[bytes | memoryview]
    size: int


class _Parts:
    """A write-only file for zipfile that keeps what it is given instead of copying it."""

    def __init__(self) -> None:
        self.parts: list[bytes | memoryview] = []
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        self.parts.append(data if isinstance(data, memoryview) else bytes(data))
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def encode_npz(arrays: dict[str, np.ndarray], meta: dict[str, str]) -> Body:
    """What numpy.savez writes (stored .npy members), without copying the arrays: each member's
    bytes are the array's own memory (for a big answer, the shared-memory segment the engine wrote),
    sent from there. np.savez copies every array through tobytes() and would materialize the
    broadcast Hessian, which this writes block by block. The archive is written as a stream
    (sizes and CRCs after each member), which every zip reader, numpy.load included, reads."""
    out = _Parts()
    members = {**arrays, **{k: np.asarray(v) for k, v in meta.items()}}
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:  # type: ignore[call-overload]
        for name, a in members.items():
            with archive.open(name + ".npy", "w", force_zip64=a.nbytes > 2**31) as member:
                np.lib.format.write_array_header_1_0(member, np.lib.format.header_data_from_array_1_0(a))
                for block in contiguous_blocks(a):
                    member.write(memoryview(block).cast("B"))
    return Body(out.parts, out.size)


def contiguous_blocks(a: np.ndarray) -> Any:
    """C-order blocks of `a` that are each contiguous in memory (one block if `a` is)."""
    if a.size == 0:
        return
    lead = 0  # leading axes to loop over; for a broadcast Hessian, up to the broadcast axis
    while not a[(0,) * lead].flags.c_contiguous:
        lead += 1
    for index in np.ndindex(*a.shape[:lead]):
        yield a[index]


def wants_npz(accept: str | None) -> bool:
    return NPZ in (accept or "")
