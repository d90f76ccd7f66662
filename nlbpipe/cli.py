"""The one error path of every entry point (the five scripts, ``python -m nlbpipe.train``/``.demo``).

An ``NlbpipeError`` (bad input, a malformed file, a run that cannot go on) or an ``OSError`` (a file
named on the command line that is missing or unreadable; the message names it) becomes one
``error: ...`` line on stderr and exit code 2. Any other exception is a bug and shows its traceback.
"""

from __future__ import annotations

import sys
from typing import Callable

from .errors import NlbpipeError

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
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
