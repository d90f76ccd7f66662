"""The one error path of every entry point (the five scripts, ``python -m nlbpipe.train``/``.demo``).

An ``NlbpipeError`` (bad input, a malformed file, a run that cannot go on) or an ``OSError`` (a file
named on the command line that is missing or unreadable; the message names it) becomes one
``error: ...`` line on stderr and exit code 2. Any other exception is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
from typing import Any, Callable

from .errors import NlbpipeError


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its usage errors as one line (``error: argument --seed: ...``), exit 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def os_error_in(err: BaseException) -> OSError | None:
    """The OSError behind ``err`` (HDF5 turns a failed write into a RuntimeError when it closes the
    file), or None."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def describe_os_error(err: OSError) -> str:
    """One line naming the path and the reason: ``cannot write X: No space left on device``,
    ``X is a file, not a folder``; never HDF5's multi-line report."""
    filename = err.filename or next(iter(re.findall(r"filename = '([^']*)'", str(err))), None)
    if filename and err.errno in (errno.EEXIST, errno.ENOTDIR) and type(err) in (FileExistsError, NotADirectoryError):
        from pathlib import Path

        blocker = next((p for p in [Path(filename), *Path(filename).parents] if p.exists() and not p.is_dir()), None)
        return f"{blocker or filename} is a file, not a folder (needed for {filename}; check NLB_HOME and the other path variables)"
    reason = os.strerror(err.errno) if err.errno else " ".join(str(err).split())
    if not filename:
        return reason
    if err.errno in (errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EDQUOT):
        return f"cannot write {filename}: {reason}"
    return f"{filename}: {reason}"


USER_ERRORS = (NlbpipeError, OSError)


def run_reporting_errors(run: Callable[[], int], interrupted: str = "error: interrupted") -> int:
    """Run a script's body; a user-facing error becomes one line on stderr and exit 2.

    Ctrl-C prints ``interrupted`` (a script names how to continue) and exits 130.
    """
    try:
        return run()
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
    except OSError as err:  # a file named on the command line, a full disk, a file where a folder should be
        print(f"error: {describe_os_error(err) if type(err).__str__ is OSError.__str__ else err}", file=sys.stderr)
        return 2
    except NlbpipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        cause = os_error_in(err)  # HDF5 turns a failed write into a RuntimeError when it closes the file
        if cause is None:
            raise  # a bug: its traceback
        print(f"error: {describe_os_error(cause)}", file=sys.stderr)
        return 2


def number(kind: Callable[[str], Any], *, what: str, low: float | None = None, above: float | None = None,
           but_not: tuple = (), words: tuple[str, ...] = ()) -> Callable[[str], Any]:
    """An argparse type: ``kind(value)`` (``int`` or ``float``) that is ``>= low``, ``> above`` and none
    of ``but_not``; each of ``words`` (e.g. ``"auto"``) is taken as it is. Anything else, NaN included,
    is ``expected <what>, got '<value>'``, which argparse prefixes with the flag
    (``error: argument --folds: expected ..., got '1'``).
    """
    def parse(value: str):
        if value in words:
            return value
        try:
            x = kind(value)
        except ValueError:
            x = None
        if x is None or (low is not None and not x >= low) or (above is not None and not x > above) \
                or x in but_not or x != x:  # x != x: NaN
            raise argparse.ArgumentTypeError(f"expected {what}, got {value!r}")
        return x

    parse.__name__ = what  # what argparse's own messages call the type
    return parse


non_negative_int = number(int, low=0, what="a non-negative integer")  # seeds, retries
positive_int = number(int, low=1, what="a positive integer")  # counts, sizes
non_negative_float = number(float, low=0, what="a non-negative number")  # tolerances, GPUs
positive_float = number(float, above=0, what="a positive number")  # CPUs
