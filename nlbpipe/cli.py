"""What every top-level script does with an error: one line naming the fault, exit code 2."""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
from typing import Callable


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


def run_reporting_errors(run: Callable[[], int]) -> int:
    """Run a script's body; a failure becomes ``error: ...`` on stderr and exit 2, never a traceback."""
    try:
        return run()
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except OSError as err:
        print(f"error: {describe_os_error(err)}", file=sys.stderr)
        return 2
    except (ValueError, KeyError, ImportError) as err:  # project errors subclass these
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except Exception as err:  # inference/tensor errors (RuntimeError, DataFileError): still one line
        cause = os_error_in(err)
        print(f"error: {describe_os_error(cause) if cause else f'{type(err).__name__}: {err}'}", file=sys.stderr)
        return 2
