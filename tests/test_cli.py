"""The one error path: user errors are one line and exit 2, Ctrl-C 130, a bug keeps its traceback."""

from __future__ import annotations

import pytest

from nlbpipe.cli import run_reporting_errors
from nlbpipe.config import ConfigError
from nlbpipe.errors import MissingKeyError, NlbpipeError
from nlbpipe.search_space import SearchSpaceError
from nlbpipe.tensors import DataFileError


def _raise(err):
    def run():
        raise err
    return run


@pytest.mark.parametrize("err, line", [
    (ConfigError("model.dropout", "a.yaml", "must be in [0, 1)"), "error: a.yaml: model.dropout: must be in [0, 1)"),
    (DataFileError("x.nwb is not a readable NWB file"), "error: x.nwb is not a readable NWB file"),
    (MissingKeyError("r.h5 lacks eval_rates_heldout"), "error: r.h5 lacks eval_rates_heldout"),
    (FileNotFoundError("config file not found: c.yaml"), "error: config file not found: c.yaml"),
])
def test_user_errors_are_one_line_and_exit_2(err, line, capsys):
    assert run_reporting_errors(_raise(err)) == 2
    assert capsys.readouterr().err == line + "\n"


def test_config_and_search_space_errors_are_separate_classes():
    assert not issubclass(ConfigError, SearchSpaceError) and not issubclass(SearchSpaceError, ConfigError)
    assert issubclass(ConfigError, NlbpipeError) and issubclass(SearchSpaceError, ValueError)


def test_a_bug_keeps_its_traceback():
    with pytest.raises(ZeroDivisionError):
        run_reporting_errors(lambda: 1 // 0)
    with pytest.raises(KeyError):
        run_reporting_errors(_raise(KeyError("not a user error")))


def test_interrupt_exits_130_with_the_given_line(capsys):
    assert run_reporting_errors(_raise(KeyboardInterrupt()), interrupted="interrupted; resume with X") == 130
    assert capsys.readouterr().err == "interrupted; resume with X\n"
    assert run_reporting_errors(lambda: 0) == 0
