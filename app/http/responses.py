"""An answer on the wire: the encoding the client asked for (`app.service.codec`), done off the event
loop when it is big, and sent in pieces that release the answer's memory claim when done."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from starlette.responses import Response

from app.service import codec, npz
from app.service.dataplane import Served

BIG_ANSWER = 2**18  # elements; below this, encoding costs less than a thread hop


async def encoded(answer: Served, as_npz: bool) -> Response:
    """The answer as an npz or JSON response; its memory claim is released once it is sent."""
    encode, media = (npz.write, codec.NPZ) if as_npz else (codec.encode_json, codec.JSON)
    return await respond(answer, lambda: encode(answer.arrays, answer.meta), media)


async def respond(answer: Served, encode: Callable[[], bytes | npz.Body], media_type: str) -> AnswerResponse:
    """`encode()` of the answer as the response; its memory claim is released once it is sent."""
    try:
        elements = sum(a.size for a in answer.arrays.values())
        if elements < BIG_ANSWER:
            body = encode()
        else:  # encoding megabytes takes tens of ms: off the event loop, so other requests keep flowing
            body = await asyncio.to_thread(encode)
    except BaseException:
        answer.release()
        raise
    return AnswerResponse(body, media_type, on_sent=answer.release)


class AnswerResponse(Response):
    """An encoded answer, sent in pieces of at most `PIECE` bytes: the transport then holds back
    the rest under flow control instead of copying a 500 MB body into its buffer at once. Calls
    `on_sent` (the memory claim's release) when done, sent or not."""

    PIECE = 1 << 20

    def __init__(self, body: bytes | npz.Body, media_type: str, on_sent: Callable[[], None]) -> None:
        self.parts = body.parts if isinstance(body, npz.Body) else [body]
        super().__init__(media_type=media_type)
        size = body.size if isinstance(body, npz.Body) else len(body)
        self.headers["content-length"] = str(size)
        self.on_sent = on_sent

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            pieces = [
                view[i : i + self.PIECE]
                for part in self.parts
                for view in [memoryview(part).cast("B")]
                for i in range(0, len(view), self.PIECE)
            ]
            for piece in pieces[:-1]:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": pieces[-1] if pieces else b"", "more_body": False})
        finally:
            self.parts = []
            self.on_sent()
