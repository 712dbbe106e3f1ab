"""The callable classes Ray Data runs in its actors: one client per actor, async calls.

Ray builds each class once per actor from picklable arguments (the LangChain classes
pickle), so every actor has its own copy of the model and its own connection pools. Ray
Data runs an ``async def __call__`` on an event loop of the actor's own (a thread it
starts); the first call remembers that loop, and `close` closes the model's async
sessions on it, as aiohttp requires, when the actor exits: Ray 2.60 calls the worker's
``__ray_shutdown__`` on a graceful exit, which drops its reference to the instance, and
the process exits; `close` runs then from ``atexit`` (registered in ``__init__``; the
loop's thread still runs at that point). ``__ray_shutdown__`` and ``__del__`` call it too,
should Ray call the first on the class one day or drop the instance earlier (``atexit``
forgets it on `close`). Without this, aiohttp prints "Unclosed client session" from the actor.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from langchain_matric.ray._rate import TokenBucket
from langchain_matric.ray._rows import (
    OnError,
    Outcome,
    merge,
    run_halving,
    split_texts,
    with_rejected,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from langchain_matric.chat_models import ChatMatric
    from langchain_matric.embeddings import MatricEmbeddings
    from langchain_matric.llms import MatricLLM

T = TypeVar("T")

CLOSE_TIMEOUT = 10.0
"""Seconds `close` waits for the sessions to close on the actor's loop."""


@dataclass(frozen=True, slots=True)
class Columns:
    """What a UDF reads and writes, and what it does with a failure (picklable)."""

    input: str
    output: str
    error: str
    on_error: OnError
    qps: float | None
    """This actor's request rate cap (the dataset's `qps` / actors); None: no cap."""
    max_concurrency: int
    """Requests in flight at once in this actor, over all its batches."""


class _ClientUDF:
    """What both UDFs share: the model, the rate cap, the semaphore and closing."""

    def __init__(self, model: MatricEmbeddings | ChatMatric | MatricLLM, columns: Columns) -> None:
        self._model = model
        self._columns = columns
        self._bucket = TokenBucket(columns.qps) if columns.qps is not None else None
        self._hold_until = 0.0  # loop time before which no request goes (Retry-After)
        self._semaphore = asyncio.Semaphore(columns.max_concurrency)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._first = asyncio.Lock()
        self._warm = False
        self._closed = False
        # The actor's exit closes the clients (see the module's docstring).
        atexit.register(self.close)

    async def _request(self, call: Callable[[], Awaitable[T]]) -> T:
        """One request under the semaphore, the rate cap and any `Retry-After` hold.

        The actor's first request goes alone: it builds the client (imports, session,
        connection), which can take a second on a busy machine; requests paced while
        it did would all go at once when it is done, above the rate cap. The next one
        then waits a full interval from its end: when its own request reached the server
        is not known.
        """
        self._loop = asyncio.get_running_loop()
        if not self._warm:
            async with self._first:
                if not self._warm:
                    try:
                        return await self._paced(call)
                    finally:
                        self._warm = True
                        if self._bucket is not None:
                            now = self._loop.time()
                            self._bucket.hold(until=now + 1 / self._bucket.rate)
        return await self._paced(call)

    async def _paced(self, call: Callable[[], Awaitable[T]]) -> T:
        loop = asyncio.get_running_loop()
        async with self._semaphore:
            wait = self._hold_until - loop.time()
            if self._bucket is not None:
                wait = max(wait, self._bucket.reserve(loop.time()))
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                return await call()
            except Exception as error:
                retry_after = getattr(error, "retry_after", None)
                if isinstance(retry_after, int | float) and retry_after > 0:
                    # The client's own retries are spent: every later request of this
                    # actor waits as the server asked.
                    self._hold_until = max(self._hold_until, loop.time() + retry_after)
                raise

    def _table(self, batch: pa.Table, outcome: Outcome[T], output: pa.Array) -> pa.Table:
        """`batch` with the output column (and, for on_error="column", the error column)."""
        import pyarrow as pa  # noqa: PLC0415 - Ray brings it; imported in the actor

        columns = self._columns
        table = _set_column(batch, columns.output, output)
        if columns.on_error == "column":
            table = _set_column(table, columns.error, pa.array(outcome.errors, type=pa.string()))
        return table

    # -- the end of the actor ----------------------------------------------------------

    def close(self) -> None:
        """Close the model's connection pools; the async ones on the loop that used them."""
        if getattr(self, "_closed", True):  # closed, or __init__ never finished
            return
        self._closed = True
        atexit.unregister(self.close)
        loop, model = self._loop, self._model
        # No logging here: at an actor's exit a log call can hang until Ray kills the
        # process. An error propagates (Python prints it from atexit and __del__).
        if loop is None or loop.is_closed():
            model.close()
        elif not loop.is_running():
            loop.run_until_complete(model.aclose())
        elif _loop_thread(loop) == threading.get_ident():
            loop.create_task(model.aclose())
        else:
            asyncio.run_coroutine_threadsafe(model.aclose(), loop).result(CLOSE_TIMEOUT)

    def __ray_shutdown__(self) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


class EmbedUDF(_ClientUDF):
    """Embeds a batch's text column into a float32 vector column.

    The texts go out in the requests `MatricEmbeddings` would send (its `chunk_size`
    and `max_batch_chars`), each a rate-capped request; a failed request is halved
    (`run_halving`) when failures go to a column.

    Example:
        >>> from langchain_matric import MatricEmbeddings
        >>> columns = Columns("text", "embedding", "error", "column", None, 4)
        >>> udf = EmbedUDF(MatricEmbeddings(backend="openai", model="m"), columns)
        >>> udf.close()
    """

    def __init__(self, model: MatricEmbeddings, columns: Columns) -> None:
        super().__init__(model, columns)
        self._embeddings = model
        self._dim = model.dimensions  # learnt from the first vector when None

    async def __call__(self, batch: pa.Table) -> pa.Table:
        column = self._columns.input
        texts, rejected = split_texts(batch.column(column).to_pylist(), column)
        if rejected and self._columns.on_error == "raise":
            index, why = next(iter(rejected.items()))
            msg = f"row {index} of a batch: {why.removeprefix('TypeError: ')}"
            raise TypeError(msg)
        requests = self._embeddings._batches(texts)
        outcomes = await asyncio.gather(
            *(run_halving(chunk, self._embed, self._columns.on_error) for chunk in requests)
        )
        outcome = with_rejected(merge(outcomes), rejected)
        return self._table(batch, outcome, self._vectors(outcome.outputs))

    def _vectors(self, vectors: list[list[float] | None]) -> pa.Array:
        """Ray's float32 tensor column (rows read back as float32 arrays); None: null."""
        import numpy as np  # noqa: PLC0415 - Ray brings it; imported in the actor
        import pyarrow as pa  # noqa: PLC0415
        from ray.data.extensions import ArrowTensorArray  # noqa: PLC0415

        if self._dim is None:
            self._dim = next((len(v) for v in vectors if v is not None), None)
        # A batch whose every row failed, before any vector: shape (0,); Ray unifies it.
        dim = self._dim or 0
        tensor_type = ArrowTensorArray.from_numpy(np.zeros((0, dim), dtype=np.float32)).type
        storage = pa.array(vectors, type=tensor_type.storage_type)
        return pa.ExtensionArray.from_storage(tensor_type, storage)

    async def _embed(self, texts: Sequence[str]) -> list[list[float]]:
        return await self._request(lambda: self._embeddings.aembed_documents(list(texts)))


class GenerateUDF(_ClientUDF):
    """Answers a batch's prompt column, one request per row, into a text column.

    Each row is its own request, so a failure is already one row's: with
    on_error="column" it carries the error text and a null output.

    Example:
        >>> from langchain_matric import MatricLLM
        >>> columns = Columns("prompt", "output", "error", "raise", 2.0, 8)
        >>> udf = GenerateUDF(MatricLLM(backend="ollama", model="m"), columns)
        >>> udf.close()
    """

    def __init__(self, model: ChatMatric | MatricLLM, columns: Columns) -> None:
        super().__init__(model, columns)
        self._generator = model

    async def __call__(self, batch: pa.Table) -> pa.Table:
        import pyarrow as pa  # noqa: PLC0415 - Ray brings it; imported in the actor

        prompts: list[str] = batch.column(self._columns.input).to_pylist()
        outcomes = await asyncio.gather(
            *(run_halving([prompt], self._generate, self._columns.on_error) for prompt in prompts)
        )
        outcome = merge(outcomes)
        return self._table(batch, outcome, pa.array(outcome.outputs, type=pa.string()))

    async def _generate(self, prompts: Sequence[str]) -> list[str]:
        (prompt,) = prompts

        async def answer() -> str:
            reply = await self._generator.ainvoke(prompt)
            return reply if isinstance(reply, str) else reply.text

        return [await self._request(answer)]


def _set_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    """`table` with column `name` set to `values` (replaced when it exists)."""
    index = table.schema.get_field_index(name)
    if index >= 0:
        return table.set_column(index, name, values)
    return table.append_column(name, values)


def _loop_thread(loop: asyncio.AbstractEventLoop) -> int | None:
    """The id of the thread running `loop`, when asyncio records it."""
    thread_id = getattr(loop, "_thread_id", None)
    return thread_id if isinstance(thread_id, int) else None
