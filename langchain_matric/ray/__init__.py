"""Ray Data over the LangChain classes: embed or generate over a whole dataset.

``pip install "langchain-matric[ray]"`` (plain ``ray[data]``). `embed` and `generate`
add a column to a `ray.data.Dataset` with a pool of Ray actors, each with its own copy
of the model (its own connection pools, so an endpoint pool in the model spreads every
actor over all its endpoints), sending async requests with at most `max_concurrency`
in flight per actor and, with `qps`, at most `qps / actors` requests a second each.

Failures: ``on_error="raise"`` (the default) fails the dataset with the error;
``on_error="column"`` keeps going: a failed batch is retried in halves down to single
rows, and a row that still fails has a null output and its error's text in
`error_column`. See docs/architecture.md ("Ray Data").

Ray is imported only here, when these are called: ``import langchain_matric`` does not
import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_matric.ray._rate import per_actor_qps
from langchain_matric.ray._rows import check_on_error
from langchain_matric.ray._udfs import Columns, EmbedUDF, GenerateUDF

if TYPE_CHECKING:
    from ray.data import Dataset

    from langchain_matric.chat_models import ChatMatric
    from langchain_matric.embeddings import MatricEmbeddings
    from langchain_matric.llms import MatricLLM

__all__ = ["ACTOR_CPUS", "embed", "generate"]

ACTOR_CPUS = 0.25
"""CPUs Ray reserves for each actor: they wait on the network, not the CPU, so a whole
CPU each would starve the dataset's other stages (reading, writing) of scheduling room."""

INSTALL_HINT = 'pip install "langchain-matric[ray]"'


def _ray_data() -> Any:
    """`ray.data`, or an ImportError saying how to install it."""
    try:
        import ray.data  # noqa: PLC0415 - optional dependency, imported when used
    except ImportError as error:
        msg = f"langchain_matric.ray needs Ray Data: {INSTALL_HINT}"
        raise ImportError(msg) from error
    return ray.data


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"{name} must be a positive integer, not {value!r}"
        raise ValueError(msg)


def embed(
    ds: Dataset,
    embeddings: MatricEmbeddings,
    *,
    text_column: str = "text",
    output_column: str = "embedding",
    actors: int = 2,
    batch_size: int = 256,
    qps: float | None = None,
    on_error: str = "raise",
    error_column: str = "error",
) -> Dataset:
    """`ds` with `output_column`: the float32 vector of each row's `text_column`.

    Rows keep their order and other columns. Each actor sends the requests
    `embeddings` would (its `chunk_size`, `max_batch_chars` and `max_concurrency`).
    `qps` caps requests per second over all `actors`; `on_error` as in the module's
    docstring. Lazy, like every Ray Data transform: nothing runs until the dataset is
    consumed.

    Example:
        >>> import ray  # doctest: +SKIP
        >>> from langchain_matric import MatricEmbeddings  # doctest: +SKIP
        >>> from langchain_matric.ray import embed  # doctest: +SKIP
        >>> model = MatricEmbeddings(backend="ollama", model="nomic-embed-text")  # doctest: +SKIP
        >>> ds = ray.data.from_items([{"text": "a"}, {"text": "b"}])  # doctest: +SKIP
        >>> embed(ds, model, actors=2, qps=50).take_all()  # doctest: +SKIP
    """
    data = _ray_data()
    _check_count("actors", actors)
    _check_count("batch_size", batch_size)
    columns = Columns(
        input=text_column,
        output=output_column,
        error=error_column,
        on_error=check_on_error(on_error),
        qps=per_actor_qps(qps, actors),
        max_concurrency=embeddings.max_concurrency,
    )
    return _map(
        data,
        ds,
        udf=EmbedUDF,
        model=embeddings,
        columns=columns,
        actors=actors,
        batch_size=batch_size,
    )


def generate(
    ds: Dataset,
    model: ChatMatric | MatricLLM,
    *,
    prompt_column: str = "prompt",
    output_column: str = "output",
    actors: int = 2,
    batch_size: int = 64,
    max_concurrency: int = 8,
    qps: float | None = None,
    on_error: str = "raise",
    error_column: str = "error",
) -> Dataset:
    """`ds` with `output_column`: `model`'s reply text (`str`) to each row's prompt.

    `model` is a `ChatMatric` (the prompt is one human message) or a `MatricLLM`. One
    request per row, at most `max_concurrency` in flight per actor; `qps` caps requests
    per second over all `actors`; `on_error` as in the module's docstring.

    Example:
        >>> import ray  # doctest: +SKIP
        >>> from langchain_matric import ChatMatric  # doctest: +SKIP
        >>> from langchain_matric.ray import generate  # doctest: +SKIP
        >>> chat = ChatMatric(backend="ollama", model="llama3.2")  # doctest: +SKIP
        >>> ds = ray.data.from_items([{"prompt": "Say hi"}])  # doctest: +SKIP
        >>> generate(ds, chat, on_error="column").take_all()  # doctest: +SKIP
    """
    data = _ray_data()
    _check_count("actors", actors)
    _check_count("batch_size", batch_size)
    _check_count("max_concurrency", max_concurrency)
    columns = Columns(
        input=prompt_column,
        output=output_column,
        error=error_column,
        on_error=check_on_error(on_error),
        qps=per_actor_qps(qps, actors),
        max_concurrency=max_concurrency,
    )
    return _map(
        data,
        ds,
        udf=GenerateUDF,
        model=model,
        columns=columns,
        actors=actors,
        batch_size=batch_size,
    )


def _map(
    data: Any,
    ds: Dataset,
    *,
    udf: type[EmbedUDF | GenerateUDF],
    model: MatricEmbeddings | ChatMatric | MatricLLM,
    columns: Columns,
    actors: int,
    batch_size: int,
) -> Dataset:
    result: Dataset = ds.map_batches(
        udf,
        fn_constructor_kwargs={"model": model, "columns": columns},
        compute=data.ActorPoolStrategy(size=actors),
        batch_size=batch_size,
        batch_format="pyarrow",
        num_cpus=ACTOR_CPUS,
        udf_modifying_row_count=False,
    )
    return result
