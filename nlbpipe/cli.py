"""What every top-level script does with an error: one line naming the fault, exit code 2."""

from __future__ import annotations

import sys
from typing import Callable


def run_reporting_errors(run: Callable[[], int]) -> int:
    """Run a script's body; a failure becomes ``error: ...`` on stderr and exit 2, never a traceback."""
    try:
        return run()
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except (ValueError, KeyError, OSError, ImportError) as err:  # project errors subclass these
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except Exception as err:  # inference/tensor errors (RuntimeError, DataFileError): still one line
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
