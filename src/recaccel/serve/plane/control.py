"""The control channel between the supervisor and one front process, on either's event loop.

    channel = Channel(connection, handle=on_command)   # on the running loop
    answer = await channel.ask(Command("load", {...}))  # the other side's handler answers

Each side may ask the other: a front asks the supervisor to load a model everywhere, and the
supervisor asks every front to load it. What crosses is a `Command` or a `Reply` (pickled by
`multiprocessing.connection`, a few hundred bytes each, a handful per hot swap: never on the
request path). A reply carries the id of the command it answers; a command that fails in its
handler is answered with the error's status and message, not dropped. When the other side
goes away, every question still waiting fails with `ChannelClosedError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from recaccel.errors import RecaccelError
from recaccel.serve.errors import RequestError

log = logging.getLogger(__name__)


class ChannelClosedError(RecaccelError):
    """The process at the other end of the channel is gone."""


@dataclass(frozen=True)
class Command:
    op: str  # e.g. "load", "unload"
    args: dict[str, Any] = field(default_factory=dict)
    id: int = 0


@dataclass(frozen=True)
class Reply:
    id: int
    ok: bool
    value: Any = None  # the handler's result when ok
    status: int = 500  # else the error's HTTP status and message
    message: str = ""

    def result(self) -> Any:
        """The value, or the error as a RequestError with its status."""
        if not self.ok:
            raise RequestError(self.message, status=self.status)
        return self.value


Handler = Callable[[Command], Awaitable[Any]]
_ids = itertools.count(1)


class Channel:
    """One end of a duplex `multiprocessing` pipe, read when readable on the running loop."""

    def __init__(self, connection: Connection, handle: Handler | None = None) -> None:
        self._connection = connection
        self._handle = handle
        self._loop = asyncio.get_running_loop()
        self._waiting: dict[int, asyncio.Future[Reply]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False
        self._loop.add_reader(connection.fileno(), self._on_readable)

    async def ask(self, command: Command, timeout_s: float | None = None) -> Reply:
        """Send `command` and wait for its reply (ChannelClosedError if the other side ends)."""
        if self.closed:
            raise ChannelClosedError("the control channel is closed")
        command = Command(command.op, command.args, next(_ids))
        future: asyncio.Future[Reply] = self._loop.create_future()
        self._waiting[command.id] = future
        try:
            self._send(command)
            return await asyncio.wait_for(future, timeout_s)
        finally:
            self._waiting.pop(command.id, None)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(ValueError, OSError, RuntimeError):
            self._loop.remove_reader(self._connection.fileno())
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ChannelClosedError("the other process ended"))
        self._waiting.clear()
        with contextlib.suppress(OSError):
            self._connection.close()

    def _send(self, message: Command | Reply) -> None:
        try:
            self._connection.send(message)
        except (OSError, ValueError) as error:  # the other side is gone
            self.close()
            raise ChannelClosedError(f"the control channel broke: {error}") from None

    def _on_readable(self) -> None:
        try:
            while self._connection.poll():
                self._receive(self._connection.recv())
        except (EOFError, OSError):
            self.close()

    def _receive(self, message: Command | Reply) -> None:
        if isinstance(message, Reply):
            future = self._waiting.get(message.id)
            if future is not None and not future.done():
                future.set_result(message)
            return
        task = self._loop.create_task(self._answer(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, command: Command) -> None:
        try:
            if self._handle is None:
                raise RequestError(f"no handler for {command.op!r} here", status=500)
            reply = Reply(command.id, True, await self._handle(command))
        except RequestError as error:
            text = error.message + (f" ({error.hint})" if error.hint else "")
            reply = Reply(command.id, False, status=error.status, message=text)
        except Exception as error:  # a bug in a handler: answered, and logged here
            log.exception("control command %s failed", command.op)
            reply = Reply(command.id, False, message=f"{type(error).__name__}: {error}")
        with contextlib.suppress(ChannelClosedError):
            self._send(reply)
