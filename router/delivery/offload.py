"""Running a CPU-heavy sender in its own process.

A warehouse load is mostly Python work (flattening events into rows, planning schema
changes) plus the database's own work. In the router's process it holds the GIL and
competes with the event loop; in a child process (at niceness +10, so that the event
loop wins the CPU) it runs on another core. The router sends the batch as one JSON array
(the records' own bytes for events still equal to them) and gets the per-event outcomes
back.

    ProcessSender("destinations.duckdb_load:DuckDBSender", settings)

The batch goes to the child as a temporary file holding its JSON array, written in one
call (~2 ms for 5,000 events), which the loader reads itself: no pickling through the
pool's pipe and no copy in the child. From the send to the child starting on the batch:
median 11.6 ms through the pipe, 5.2 ms with the file (bench, 200k events). The
factory (a class, or ``"module:attribute"`` so that only the child imports it) is built
in the child from ``settings``; what it builds must offer
``send_sync(events) -> list[Outcome]`` (or ``send_file(path)``, which reads the file
itself; with ``last_load`` saying how it loaded, passed to ``on_load``) and
``close_sync()``. If the child dies, the batch is retried and a new child started.

Two batches at a time: one loading, and the next *staged* in the child's queue, so that
the child goes straight on to it instead of idling through a round trip to the router
(busy ~82% of the bench's run with DuckDB instead of ~75%; +12-26% events/s in
alternating runs). Only while the load ahead looks normal (under 1.5x its usual time):
otherwise the next batch waits here, since a load running long may be a stall. A staged
batch is out of the engine's reach, so ``withdraw()`` takes it back, and one waiting
here too: the child claims a batch by renaming its file, the router withdraws one by
deleting it, and whichever comes first wins. A withdrawn send raises ``Withdrawn`` at
once; the worker parks its batch as it parks the batches turned away at its gate when
the destination stalls (a checkpoint of several seconds must not hold them too). The
sender is ``serial``: the worker times a queued send from the end of the one ahead.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import logging
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import orjson

from router.delivery.gate import Withdrawn
from router.delivery.outcome import Outcome, Retry
from router.events import json_array
from router.logs import configure_stdlib

_loader: Any = None  # the child's instance
CHILD_NICENESS = 10
PR_SET_PDEATHSIG = 1  # prctl(2)
TAKEN = ".taken"  # the child's claim on a batch file: renamed to <name>.taken
STAGE_WITHIN = 1.5  # queue a batch in the child only while its load runs under 1.5x usual


def load_attr(path: str) -> Any:
    """``"package.module:attribute"`` -> the attribute, importing the module."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _init(factory: Any, settings: Any, parent: int, log_level: int) -> None:
    global _loader
    _die_with_parent(parent)
    # Ctrl-C reaches the whole process group; the router decides when loading stops
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_stdlib(log_level)  # the loader's warnings as JSON lines, as the router's
    with contextlib.suppress(OSError):  # bulk work yields the CPU to the router's event loop
        os.nice(CHILD_NICENESS)
    _loader = (load_attr(factory) if isinstance(factory, str) else factory)(settings)


def _die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this child when the router dies (even by kill -9), rather than let it
    finish its batch as an orphan holding, say, DuckDB's file lock against the restarted
    router. An uncommitted load is rolled back; its events are consumed again."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the router died before that took effect
        os._exit(1)


def _send(path: str) -> tuple[list[Outcome], str] | None:
    """The outcomes of the batch in ``path``, and how the loader loaded it (its
    ``last_load``, if it says); None if the router withdrew the batch first."""
    taken = path + TAKEN
    try:
        os.rename(path, taken)  # atomic: either this or the router's withdrawal wins
    except FileNotFoundError:
        return None
    send_file = getattr(_loader, "send_file", None)  # a loader that reads the file itself
    outcomes = (send_file(taken) if send_file is not None
                else _loader.send_sync(orjson.loads(Path(taken).read_bytes())))
    return outcomes, getattr(_loader, "last_load", "")


def _close() -> None:
    if _loader is not None:
        _loader.close_sync()


class ProcessSender:
    def __init__(self, factory: Any, settings: Any) -> None:
        self.factory = factory
        self.settings = settings
        self.pool: ProcessPoolExecutor | None = None
        self.takes_raw = True  # send(events, raws): the records' bytes, not re-serialised
        self.max_concurrency = 2  # one loading, one staged (see the module doc)
        self.serial = True  # a batch queued here starts when the one ahead of it ends
        self.staged: dict[str, asyncio.Future[None]] = {}  # batch file -> its withdrawal
        self.loading: asyncio.Future[Any] | None = None  # the call handed to the child last
        self.busy_since = 0.0  # when the child started the batch it is on (monotonic)
        self.load_s = 0.0  # the child's usual time per batch (moving average)
        self.on_load: Callable[[str], None] | None = None  # told how each batch loaded

    def _pool(self) -> ProcessPoolExecutor:
        if self.pool is None:
            self.pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init, initargs=(self.factory, self.settings, os.getpid(),
                                             logging.getLogger().getEffectiveLevel()))
        return self.pool

    async def start(self) -> None:
        # start the child now, so the first batch does not wait for it
        await asyncio.get_running_loop().run_in_executor(self._pool(), _noop)

    async def send(self, events: list[dict[str, Any]], raws: list[bytes | None] | None = None
                   ) -> list[Outcome]:
        """The batch's outcomes; raises ``Withdrawn`` if ``withdraw()`` took it back."""
        loop = asyncio.get_running_loop()
        withdrawn = Withdrawn(f"{len(events)} events taken back before loading")
        fd, path = tempfile.mkstemp(prefix="event-router-", suffix=".json")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(json_array(events, raws))
            withdrawal = self.staged[path] = loop.create_future()
            ahead = self.loading
            if ahead is not None and not ahead.done() and not self._stage_behind():
                # kept here, not in the child's queue, until the load ahead of it ends
                await asyncio.wait((ahead, withdrawal), return_when=asyncio.FIRST_COMPLETED)
                if withdrawal.done():
                    raise withdrawn
            work = self.loading = loop.run_in_executor(self._pool(), _send, path)
            if ahead is None or ahead.done():
                self.busy_since = time.monotonic()
            work.add_done_callback(self._loaded)
            await asyncio.wait((work, withdrawal), return_when=asyncio.FIRST_COMPLETED)
            if not work.done():  # the child will find no file, and answer None
                work.add_done_callback(_consume)
                raise withdrawn
            try:
                done = work.result()
            except BrokenProcessPool as exc:
                self.pool = None  # a new child on the next batch
                return [Retry(f"loader process died: {exc}")] * len(events)
        finally:
            self.staged.pop(path, None)
            for name in (path, path + TAKEN):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name)
        if done is None:  # withdrawn just as the child answered
            raise withdrawn
        outcomes, load = done
        if load and self.on_load is not None:
            self.on_load(load)
        return outcomes

    def _stage_behind(self) -> bool:
        """Whether to queue a batch in the child behind the one it is loading: only
        while that load looks normal (under 1.5x the usual). A load running long may be a
        stall (a checkpoint), and a batch waiting on it is better kept where the stall's
        withdrawal costs nothing: in a live stream, where batches do not wait at all
        unless a load runs long, this keeps the child from being handed a second batch
        at the start of each stall (twice the events to park when it is seen)."""
        return bool(self.load_s) and time.monotonic() - self.busy_since < STAGE_WITHIN * self.load_s

    def _loaded(self, work: asyncio.Future[Any]) -> None:
        """A batch's call ended: time the child's load, and start the clock on the next."""
        now = time.monotonic()
        if not work.cancelled() and work.exception() is None and work.result() is not None:
            took = now - self.busy_since
            self.load_s = took if not self.load_s else 0.8 * self.load_s + 0.2 * took
        self.busy_since = now  # a batch queued behind it starts now

    def withdraw(self) -> int:
        """Take back every batch the child has not started; how many there were."""
        count = 0
        for path, withdrawal in list(self.staged.items()):
            if withdrawal.done():
                continue
            try:
                os.unlink(path)
            except FileNotFoundError:  # the child has it
                continue
            withdrawal.set_result(None)
            count += 1
        return count

    async def close(self) -> None:
        if self.pool is None:
            return
        loop = asyncio.get_running_loop()
        with contextlib.suppress(BrokenProcessPool):
            await loop.run_in_executor(self.pool, _close)
        self.pool.shutdown(wait=True)
        self.pool = None


def _noop() -> None:
    return None


def _consume(future: asyncio.Future[Any]) -> None:
    """A withdrawn batch's call still ends (the child finds no file): read its result,
    so that an exception there (the child died meanwhile) is not reported as unread."""
    if not future.cancelled():
        future.exception()
