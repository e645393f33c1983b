"""Work that is dropped when its client hangs up: a request still queued for the engine is then
never computed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

from app.errors import ClientDisconnected

T = TypeVar("T")


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, but drop it if the client hangs up first (ClientDisconnected). The work runs in
    this task; one watcher task waits for the disconnect and cancels it."""
    task = asyncio.current_task()
    assert task is not None
    working = True

    def hung_up(watcher: asyncio.Future[None]) -> None:
        if working and not watcher.cancelled():  # a callback runs later: the work may be over
            task.cancel()

    watcher = asyncio.ensure_future(_disconnected(request))
    watcher.add_done_callback(hung_up)
    try:
        return await work
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled():
            task.uncancel()  # the cancellation was ours, and it ends here
            raise ClientDisconnected("The client disconnected before the answer was ready") from None
        raise
    finally:
        working = False
        watcher.cancel()


async def _disconnected(request: Request) -> None:
    # After the body, the server's next message for this request is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass
