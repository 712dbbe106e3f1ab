"""`matric probe`: find out what an inference server is and what it can do.

The checks live with the backends (`langchain_matric.backends._capabilities`, also run by
`capabilities="auto"`); this module adds what only the command reports: time to first
token and tokens per second, the median of a few streams through `OpenAIBackend` or
`OllamaBackend`, so the figures are what the backends will see.

A check that fails does not stop the others: its field stays None and a note says why.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

from langchain_matric._http import Timeouts
from langchain_matric.backends._capabilities import (
    ALL_CHECKS,
    BackendChoice,
    Check,
    Prober,
    ProbeReport,
)
from langchain_matric.backends._types import GenerationOptions, GenerationRequest
from langchain_matric.backends.ollama import OllamaBackend
from langchain_matric.backends.openai import OpenAIBackend

__all__ = ["ProbeReport", "TimingProber", "probe"]


class TimingProber(Prober):
    """`Prober` plus the "timing" check: streams through a backend, timed by `clock`.

    Example:
        >>> from langchain_matric.testing import LocalServer
        >>> with LocalServer() as server:
        ...     prober = TimingProber(server.openai_base_url, runs=1)
        ...     report = prober.run("openai", checks=("timing",))
        >>> report.runs, report.ttft_ms is not None
        (1, True)
    """

    def __init__(
        self,
        base_url: str,
        *,
        runs: int = 3,
        clock: Callable[[], float] = time.perf_counter,
        api_key: str | None = None,
        timeout: float = 120.0,
        headers: Mapping[str, str] | None = None,
        verify: bool | str = True,
    ) -> None:
        super().__init__(base_url, api_key=api_key, timeout=timeout, headers=headers, verify=verify)
        self.runs = runs
        self.clock = clock

    def generation_checks(self) -> tuple[tuple[Check, Callable[[str], None]], ...]:
        """The base checks, then "timing"."""
        return (*super().generation_checks(), ("timing", self.check_timing))

    def check_timing(self, model: str) -> None:
        """Median time to first token and tokens per second over `runs` streams."""
        backend: OpenAIBackend | OllamaBackend
        timeouts = Timeouts(first_byte=self.timeout, idle=self.timeout)
        if self.report.api == "ollama":
            backend = OllamaBackend(self.root, model=model, timeouts=timeouts, max_retries=0)
        else:
            backend = OpenAIBackend(
                self.openai_base,
                api_key=self.api_key,
                model=model,
                timeouts=timeouts,
                max_retries=0,
            )
        request = GenerationRequest.from_prompt(
            "Count from one to twenty.", options=GenerationOptions(temperature=0, max_tokens=32)
        )
        firsts: list[float] = []
        rates: list[float] = []
        with backend:
            for _ in range(self.runs):
                first, rate = _time_stream(backend.generate_stream(request), self.clock)
                if first is not None:
                    firsts.append(first)
                if rate is not None:
                    rates.append(rate)
        self.report.runs = self.runs
        self.report.ttft_ms = statistics.median(firsts) * 1000 if firsts else None
        self.report.tokens_per_second = statistics.median(rates) if rates else None


def _time_stream(deltas: Iterator[Any], clock: Callable[[], float]) -> tuple[float | None, ...]:
    start = clock()
    first: float | None = None
    last = start
    pieces = 0
    output_tokens: int | None = None
    for delta in deltas:
        if delta.text or delta.reasoning:
            now = clock()
            if first is None:
                first = now
            last = now
            pieces += 1
        if delta.usage is not None:
            output_tokens = delta.usage.output_tokens
    if first is None:
        return None, None
    tokens = output_tokens if output_tokens else pieces
    span = last - first
    rate = (tokens - 1) / span if tokens > 1 and span > 0 else None
    return first - start, rate


def probe(
    base_url: str,
    *,
    backend: BackendChoice = "auto",
    model: str | None = None,
    embed_model: str | None = None,
    api_key: str | None = None,
    runs: int = 3,
    timeout: float = 120.0,
    clock: Callable[[], float] = time.perf_counter,
    checks: Collection[Check] = ALL_CHECKS,
    headers: Mapping[str, str] | None = None,
    verify: bool | str = True,
) -> ProbeReport:
    """Probe the server at `base_url` (an OpenAI `/v1` URL or a server root): `matric probe`.

    The OpenAI API is checked at `base_url` as given, as `OpenAIBackend` would use it; a
    server root whose API is under `/v1` gets a note saying so (and with
    `backend="openai"`, no further checks). `checks` limits what is tried beyond
    detecting the API and its models.

    Example:
        >>> from langchain_matric.testing import LocalServer
        >>> with LocalServer() as server:
        ...     report = probe(server.openai_base_url, backend="openai", runs=1)
        >>> report.api, report.streaming, report.tool_calls
        ('openai', 'sse', True)
    """
    prober = TimingProber(
        base_url,
        runs=runs,
        clock=clock,
        api_key=api_key,
        timeout=timeout,
        headers=headers,
        verify=verify,
    )
    return prober.run(backend, model=model, embed_model=embed_model, checks=checks)
