"""The package version, in a leaf module so the HTTP stack can name it without a cycle.

Example:
    >>> from langchain_matric._version import __version__
    >>> __version__.count(".")
    2
"""

from __future__ import annotations

__version__ = "0.1.0"
