"""The one error path: user errors are one line and exit 2, Ctrl-C 130, a bug keeps its traceback;
number flags refused in one argparse line naming the flag and the value."""

from __future__ import annotations

import pytest

from nlbpipe.cli import (
    ArgumentParser,
    non_negative_float,
    non_negative_int,
    number,
    positive_float,
    positive_int,
    run_reporting_errors,
)
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


def _parse(type_, value: str, capsys):
    """``--flag value`` through nlbpipe's ArgumentParser: the value, or its usage line (exit 2)."""
    parser = ArgumentParser(prog="script.py")
    parser.add_argument("--flag", type=type_)
    try:
        return parser.parse_args([f"--flag={value}"]).flag  # "=": argparse takes -1e-9 for an option
    except SystemExit as stop:
        assert stop.code == 2
        return capsys.readouterr().err


@pytest.mark.parametrize("type_, value, parsed", [
    (positive_int, "3", 3), (non_negative_int, "0", 0), (positive_float, "0.5", 0.5), (non_negative_float, "0", 0.0),
    (number(int, low=1, words=("auto",), what="a positive integer or 'auto'"), "auto", "auto"),
    (number(int, low=0, but_not=(1,), what="0 or at least 2 folds"), "2", 2),
])
def test_number_flags_take_what_is_in_range(type_, value, parsed, capsys):
    got = _parse(type_, value, capsys)
    assert got == parsed and type(got) is type(parsed)


@pytest.mark.parametrize("type_, value, what", [
    (positive_int, "0", "a positive integer"), (positive_int, "1.5", "a positive integer"),
    (non_negative_int, "-1", "a non-negative integer"), (non_negative_int, "x", "a non-negative integer"),
    (positive_float, "0", "a positive number"), (positive_float, "nan", "a positive number"),
    (non_negative_float, "-1e-9", "a non-negative number"), (non_negative_float, "nan", "a non-negative number"),
    (number(int, low=1, words=("auto",), what="a positive integer or 'auto'"), "Auto", "a positive integer or 'auto'"),
    (number(int, low=0, but_not=(1,), what="0 or at least 2 folds"), "1", "0 or at least 2 folds"),
])
def test_number_flags_refuse_the_rest_naming_flag_and_value(type_, value, what, capsys):
    assert _parse(type_, value, capsys) == \
        f"error: argument --flag: expected {what}, got {value!r} (see script.py --help)\n"
