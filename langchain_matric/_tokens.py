"""Token counts without a tokenizer: `estimate_tokens`, and `usage_to_dict` for reports.

Example:
    >>> estimate_tokens("one two three")
    4
"""

from __future__ import annotations

import math
import re

from langchain_matric.backends._types import Usage

__all__ = ["estimate_tokens", "usage_to_dict"]

_PIECES = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def estimate_tokens(text: str) -> int:
    """Estimate BPE tokens offline: ~4 characters per token, at least one per word or mark.

    English prose lands within ~20% of GPT-style tokenizers; code, numbers and
    non-Latin scripts count higher. Never downloads a tokenizer.

    Example:
        >>> estimate_tokens("Hello, world!")
        4
    """
    if not text:
        return 0
    return max(math.ceil(len(text) / 4), len(_PIECES.findall(text)))


# -- usage -----------------------------------------------------------------------------


def usage_to_dict(usage: Usage) -> dict[str, int]:
    """A `Usage` as a plain dict (`input_tokens`, `output_tokens`, `total_tokens`, ...).

    Example:
        >>> usage_to_dict(Usage(input_tokens=3, output_tokens=2, total_tokens=5))
        {'input_tokens': 3, 'output_tokens': 2, 'total_tokens': 5}
    """
    out = {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.reasoning_tokens is not None:
        out["reasoning_tokens"] = usage.reasoning_tokens
    if usage.cached_tokens is not None:
        out["cached_tokens"] = usage.cached_tokens
    return out
