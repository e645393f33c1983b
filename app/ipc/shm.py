"""Shared memory between a worker and an engine, for inputs or answers too big for the socket
(above `INLINE_MAX` bytes).

The worker leases a segment of its `Arena` (a file in the shared-memory directory, named
`<prefix>-<worker pid>-<n>`) and the engine maps it (`Mappings`). Big inputs (megabytes of X and
V) are copied into a segment by the worker (`Arena.fill`) and read in place by the engine
(`Mappings.views`); a big answer is written there by the engine (`Mappings.write`) and read in
place by the worker. Segments are reused, so after warm-up no file is created and no page faults
in; a 268 MB answer is copied once, from TensorFlow's tensor into the segment. Through the socket
the same 12 MB of inputs took ~60 wake-ups of each side and four copies. The supervisor removes
the files of a worker that died (`sweep`).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.ipc.messages import Entry

INLINE_MAX = 1 << 18  # inputs or answers above this many bytes go through shared memory
ALIGN = 64


@dataclass(frozen=True)
class Layout:
    """Where each named array sits in one buffer: (name, dtype, shape, offset)."""

    entries: list[Entry]
    nbytes: int

    @classmethod
    def of(cls, arrays: dict[str, np.ndarray]) -> Layout:
        entries, offset = [], 0
        for name, a in arrays.items():
            entries.append((name, a.dtype.name, list(a.shape), offset))
            offset += -(-a.nbytes // ALIGN) * ALIGN
        return cls(entries, offset)

    def views(self, buffer: Any) -> dict[str, np.ndarray]:
        out = {}
        for name, dtype, shape, offset in self.entries:
            count = int(np.prod(shape, dtype=np.int64))
            out[name] = np.frombuffer(buffer, dtype=dtype, count=count, offset=offset).reshape(shape)
        return out


@dataclass
class Segment:
    name: str
    size: int
    mm: mmap.mmap


def _open_segment(directory: str, name: str, size: int, create: bool) -> mmap.mmap:
    flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
    fd = os.open(os.path.join(directory, name), flags, 0o600)
    try:
        if create:
            # Sparse: no memory is taken until the engine reserves it (`Mappings.write`), so a
            # request waiting for its memory claim holds no shared memory either.
            os.ftruncate(fd, size)
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


def _reserve(directory: str, name: str, nbytes: int) -> None:
    """Allocate the segment's first `nbytes` now: writing past what tmpfs can hold would kill the
    writer with SIGBUS, while this raises OSError (ENOSPC) and the answer goes through the socket."""
    fd = os.open(os.path.join(directory, name), os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, nbytes)
    finally:
        os.close(fd)


def segment_size(nbytes: int) -> int:
    """Powers of two from 1 MiB to 64 MiB, then multiples of 64 MiB (a 537 MB answer takes 576 MiB)."""
    if nbytes <= 64 << 20:
        return max(1 << 20, 1 << (max(nbytes, 1) - 1).bit_length())
    return -(-nbytes // (64 << 20)) * (64 << 20)


class Arena:
    """A worker's shared-memory segments, reused by size class (`segment_size`): after
    the first answers of a size, no file is created and no page faults in, on either side.

    A segment goes back to the pool when the last array viewing it is freed (`weakref.finalize`),
    never while the engine might still write into it: a request cancelled or lost with its
    engine drops its segment instead (`discard`)."""

    def __init__(self, directory: str, prefix: str, keep_bytes: int = 1 << 30) -> None:
        self.directory, self.prefix, self.keep_bytes = directory, prefix, keep_bytes
        self._free: dict[int, list[Segment]] = {}
        self._count = 0

    def lease(self, nbytes: int) -> Segment:
        size = segment_size(nbytes)
        pool = self._free.get(size)
        if pool:
            return pool.pop()
        self._count += 1
        name = f"{self.prefix}-{os.getpid()}-{self._count}"
        return Segment(name, size, _open_segment(self.directory, name, size, create=True))

    def fill(self, arrays: dict[str, np.ndarray]) -> tuple[Segment, Layout] | None:
        """A segment holding copies of `arrays` (None if shared memory cannot take them)."""
        layout = Layout.of(arrays)
        try:
            segment = self.lease(layout.nbytes)
        except OSError:
            return None
        try:
            _reserve(self.directory, segment.name, layout.nbytes)  # ENOSPC here, not SIGBUS below
        except OSError:
            self.discard(segment)
            return None
        for dest, a in zip(layout.views(segment.mm).values(), arrays.values(), strict=True):
            np.copyto(dest, a)
        return segment, layout

    def give_back(self, segment: Segment) -> None:
        idle = sum(s.size for pool in self._free.values() for s in pool)
        if idle + segment.size > self.keep_bytes:
            self.discard(segment)
        else:
            self._free.setdefault(segment.size, []).append(segment)

    def discard(self, segment: Segment) -> None:
        unlink(self.directory, segment.name)
        with contextlib.suppress(BufferError):  # arrays still view it: the mapping goes with them
            segment.mm.close()

    def views(self, segment: Segment, layout: Layout) -> dict[str, np.ndarray]:
        """The answer's arrays, read from the segment; it returns to the pool when they are freed."""
        base = np.frombuffer(segment.mm, dtype=np.uint8, count=layout.nbytes)
        weakref.finalize(base, self.give_back, segment)
        return {
            name: base[offset : offset + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize]
            .view(dtype)
            .reshape(shape)
            for name, dtype, shape, offset in layout.entries
        }

    def close(self) -> None:
        for pool in self._free.values():
            for segment in pool:
                self.discard(segment)
        self._free.clear()


class Mappings:
    """The engine's side: workers' segments, mapped once and kept (least recently used first out)."""

    def __init__(self, directory: str, keep_bytes: int = 4 << 30) -> None:
        self.directory, self.keep_bytes = directory, keep_bytes
        self._maps: dict[str, mmap.mmap] = {}

    def write(self, name: str, size: int, arrays: dict[str, np.ndarray]) -> Layout | None:
        """Copy `arrays` into segment `name`; None if they do not fit or it is gone."""
        layout = Layout.of(arrays)
        if layout.nbytes > size:
            return None
        try:
            _reserve(self.directory, name, layout.nbytes)
        except OSError:  # gone, or shared memory is full
            return None
        mm = self._map(name, size)
        if mm is None:
            return None
        for dest, a in zip(layout.views(mm).values(), arrays.values(), strict=True):
            np.copyto(dest, a)
        return layout

    def views(self, name: str, size: int, layout: Layout) -> list[np.ndarray] | None:
        """The arrays a worker put in segment `name`, in place; None if it is gone (given up on)."""
        mm = self._map(name, size) if layout.nbytes <= size else None
        return None if mm is None else list(layout.views(mm).values())

    def _map(self, name: str, size: int) -> mmap.mmap | None:
        mm = self._maps.pop(name, None)
        if mm is None:
            try:
                mm = _open_segment(self.directory, name, size, create=False)
            except OSError:
                return None
        self._maps[name] = mm  # most recently used last
        self.prune()
        self._evict()
        return mm

    def prune(self) -> None:
        """Unmap segments their worker has removed: a mapping would keep their memory alive."""
        for name in [n for n in self._maps if not os.path.exists(os.path.join(self.directory, n))]:
            with contextlib.suppress(BufferError):
                self._maps.pop(name).close()

    def _evict(self) -> None:
        while len(self._maps) > 1 and sum(len(m) for m in self._maps.values()) > self.keep_bytes:
            oldest = next(iter(self._maps))
            with contextlib.suppress(BufferError):
                self._maps.pop(oldest).close()


def unlink(directory: str, name: str) -> None:
    Path(directory, name).unlink(missing_ok=True)


def sweep(directory: str, prefix: str) -> int:
    """Unlink every file whose name starts with `prefix`; how many there were."""
    gone = 0
    for path in Path(directory).glob(prefix + "*"):
        path.unlink(missing_ok=True)
        gone += 1
    return gone


def free_bytes(directory: str) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def shm_report(directory: str, needed: int) -> dict[str, Any]:
    """Can `directory` hold an answer of `needed` bytes (the largest the limits admit)?"""
    free = free_bytes(directory) if os.path.isdir(directory) else 0
    return {"dir": directory, "free_bytes": free, "needed_bytes": needed, "ok": free >= needed}
