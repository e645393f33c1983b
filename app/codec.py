"""Bytes <-> arrays: JSON bodies through pydantic's fast JSON path, npz in and out, and
JSON responses serialized straight from NumPy with orjson."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ValidationError

from app.errors import InvalidInput, MalformedBody, TooLarge
from app.problems import FLOAT_DTYPES, Problem, finite_as, from_arrays, from_lists, with_cotangents, with_tangents
from app.schemas import UNION_TAGS

JSON = "application/json"
NPZ = "application/x-npz"


def _details(err: ValidationError) -> list[dict[str, Any]]:
    # loc and msg only: echoing `input` back could return megabytes of the request.
    return [
        {"loc": [part for part in e["loc"] if part not in UNION_TAGS], "msg": e["msg"]}
        for e in err.errors(include_url=False)
    ]


def decode_json(body: bytes, model: type[BaseModel], default_dtype: str) -> Problem:
    """Parse and validate a JSON body into a Problem; 400 if not JSON, 422 if not a valid problem."""
    if not body.strip():
        raise MalformedBody("The request body is empty; send a JSON object with X and Y")
    try:
        req = model.model_validate_json(body)
    except ValidationError as err:
        details = _details(err)
        if any(e["type"] == "json_invalid" for e in err.errors()):
            raise MalformedBody(f"The request body is not valid JSON: {details[0]['msg']}", details) from None
        summary = "; ".join(f"{'.'.join(map(str, d['loc'])) or 'body'}: {d['msg']}" for d in details[:5])
        raise InvalidInput(f"The request does not match the schema: {summary}", details) from None
    dtype = req.dtype or default_dtype  # type: ignore[attr-defined]
    products = getattr(model, "products", None)
    p = from_lists(
        req.X,  # type: ignore[attr-defined]
        req.Y,  # type: ignore[attr-defined]
        dtype,
        V=None if products else getattr(req, "V", None),
        wrt=getattr(req, "wrt", ("X",)),
    )
    if products == "vjp":
        return with_cotangents(p, finite_as(req.U, "U", dtype), req.sum_states)  # type: ignore[attr-defined]
    if products == "jvp":
        return with_tangents(p, finite_as(req.V, "V", dtype))  # type: ignore[attr-defined]
    return p


def decode_npz(
    body: bytes,
    names: tuple[str, ...],
    dtype: str | None,
    max_bytes: int,
    products: str | None = None,
    sum_states: bool = False,
) -> Problem:
    """An .npz holding `names` (X, Y[, V]) as float32/float64 arrays -> Problem.

    The computation's dtype is the `dtype` argument if given, else the widest of the arrays'.
    """
    if not body:
        raise MalformedBody("The request body is empty; send an .npz archive holding X and Y")
    try:
        archive = np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise MalformedBody(f"The body is not a readable .npz archive ({type(err).__name__})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise MalformedBody("The body is a single .npy array; send an .npz archive (numpy.savez)")
    with archive:
        arrays = _read_members(archive, names, max_bytes)
    wide = dtype or str(np.result_type(*arrays.values()))
    cast = {name: finite_as(a, name, wide) for name, a in arrays.items()}
    if products == "vjp":
        return with_cotangents(from_arrays(cast["X"], cast["Y"]), cast["U"], sum_states)
    if products == "jvp":
        return with_tangents(from_arrays(cast["X"], cast["Y"]), cast["V"])
    return from_arrays(cast["X"], cast["Y"], cast.get("V"))


def _read_members(archive: Any, names: tuple[str, ...], max_bytes: int) -> dict[str, np.ndarray]:
    present = set(archive.files)
    missing = [n for n in names if n not in present]
    unknown = sorted(present - set(names))
    if missing or unknown:
        raise InvalidInput(
            f"The npz must hold exactly {', '.join(names)}; "
            f"missing: {missing or 'none'}, unexpected: {unknown or 'none'}"
        )
    # Compressed members can expand far beyond the body limit: check before decompressing.
    for info in archive.zip.infolist():
        if info.file_size > max_bytes:
            raise TooLarge(
                f"npz member {info.filename} expands to {info.file_size:,} bytes, "
                f"more than the request limit of {max_bytes:,}"
            )
    arrays = {}
    for name in names:
        try:
            a = archive[name]
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise MalformedBody(f"npz member {name} is not a readable array ({err})") from None
        if a.dtype.name not in FLOAT_DTYPES:
            raise InvalidInput(f"{name} has dtype {a.dtype}; npz arrays must be float32 or float64")
        arrays[name] = a
    return arrays


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
                for block in _contiguous_blocks(a):
                    member.write(memoryview(block).cast("B"))
    return Body(out.parts, out.size)


def _contiguous_blocks(a: np.ndarray) -> Any:
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
