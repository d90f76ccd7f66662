"""The errors a user can cause, all under one base, so every entry point reports them one way.

``NlbpipeError`` is what ``nlbpipe.cli`` turns into one ``error: ...`` line and exit code 2; any other
exception is a bug and keeps its traceback. Each module defines its own subclass next to the code
that raises it (``ConfigError`` in config.py, ``DataFileError`` in tensors.py, ...). Most also derive
from the builtin they replaced (``ValueError``, ``RuntimeError``, ``KeyError``), so callers that
catch those keep working.
"""

from __future__ import annotations


class NlbpipeError(Exception):
    """Bad input, a missing or malformed file, or a run that cannot go on: the message says which."""


class SourcedError(NlbpipeError, ValueError):
    """A problem with one key of one file (or override source); the message names both."""

    def __init__(self, key: str, source: str, problem: str):
        self.key, self.source, self.problem = key, str(source), problem
        super().__init__(f"{self.source}: {key}: {problem}")


class MissingKeyError(NlbpipeError, KeyError):
    """A file or mapping lacks a key it must hold; prints as its message (a KeyError would quote it)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class EnsembleError(NlbpipeError, ValueError):
    """An experiment folder, checkpoint table, rates file or option an ensemble cannot be built from.

    Raised where those are read (ranking's table reader, rates files) as well as by
    ``nlbpipe.ensemble``, so it lives here rather than in one of them.
    """
