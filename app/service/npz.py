"""npz in and out without copies: members numpy.savez stored are read in place from the request
body (checked against their CRC-32), and an answer's arrays are written as an archive whose members
are the arrays' own memory (for a big answer, the engine's shared-memory segment)."""

from __future__ import annotations

import io
import math
import struct
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

try:  # ~5x faster than zlib's CRC-32: checking a 12 MB request's members took 5 ms with zlib
    from isal.isal_zlib import crc32

    # zipfile checksums the npz answers it writes with its module's `crc32`, zlib's: encoding an
    # 8 MB answer took 1.8 ms here, 0.5 ms with ISA-L's. The same CRC-32 and the same results,
    # for every zipfile use in the process.
    zipfile.crc32 = crc32  # type: ignore[attr-defined]
except ImportError:  # no wheel for this platform: the same checksum, slower
    from zlib import crc32

from app.errors import InvalidInput, MalformedBody, TooLarge
from app.service.arrays import FLOAT_DTYPES


def read(body: bytes, names: tuple[str, ...] | None, max_bytes: int) -> dict[str, np.ndarray]:
    """The float arrays `names` of an .npz body, exactly those; 400/413/422 with the reason.
    With `names` None, every member, of any numeric dtype (a repository model's, checked by
    `app.service.problem` against its card)."""
    if not body:
        raise MalformedBody("The request body is empty; send an .npz archive holding X and Y")
    if body[:6] == b"\x93NUMPY":
        raise MalformedBody("The body is a single .npy array; send an .npz archive (numpy.savez)")
    try:
        archive = zipfile.ZipFile(io.BytesIO(body))  # BytesIO shares the bytes: nothing is copied
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise MalformedBody(f"The body is not a readable .npz archive ({type(err).__name__})") from None
    with archive:
        return _read_members(body, archive, names, max_bytes)


NUMERIC_KINDS = "iuf"


def _read_members(
    body: bytes, archive: zipfile.ZipFile, expected: tuple[str, ...] | None, max_bytes: int
) -> dict[str, np.ndarray]:
    members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
    names = tuple(members) if expected is None else expected
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
        if expected is None and a.dtype.kind not in NUMERIC_KINDS:
            raise InvalidInput(f"npz member {name} has dtype {a.dtype}; members must be numbers (integer or float)")
        if expected is not None and a.dtype.name not in FLOAT_DTYPES:
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


def write(arrays: dict[str, np.ndarray], meta: dict[str, str]) -> Body:
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
