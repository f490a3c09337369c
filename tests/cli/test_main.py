"""`asu` errors -> exit codes: bad input exits 2 with one line, a bug is said to be one (70), -v shows tracebacks."""

from __future__ import annotations

import pytest

from asu.errors import BUG_EXIT_CODE, ASUError, ConflictError, InfrastructureError, NoSettingFound, UsageError
from cli import main as cli_main


@pytest.mark.parametrize(("error", "code"), [(UsageError("bad tau"), 2), (NoSettingFound("none"), 3),
                                             (InfrastructureError("db down"), 4), (ConflictError("taken"), 5)])
def test_project_errors_exit_with_their_code_and_one_line(monkeypatch, capsys, error, code):
    monkeypatch.setattr("cli.registry.cmd_report", lambda args: (_ for _ in ()).throw(error))
    assert cli_main.main(["report", "r1"]) == code
    err = capsys.readouterr().err
    assert err == f"error: {error.message}\n"


def test_a_bug_is_reported_as_a_bug_and_v_shows_the_traceback(monkeypatch, capsys):
    def broken(args):
        return {}["missing"]  # a KeyError from a bug, not from the user's input

    monkeypatch.setattr("cli.registry.cmd_report", broken)
    assert cli_main.main(["report", "r1"]) == BUG_EXIT_CODE
    err = capsys.readouterr().err
    assert "internal error (a bug in asu, not your input): KeyError" in err and "Traceback" not in err
    assert cli_main.main(["-v", "report", "r1"]) == BUG_EXIT_CODE
    assert "Traceback" in capsys.readouterr().err


def test_every_project_error_has_one_base_and_infrastructure_is_not_bad_input():
    from data_contracts.errors import ContractViolation
    from pipelines.ledger.config import LedgerUnavailable
    from pipelines.ledger.queries import UnknownRequest
    from pipelines.ledger.store import StateConflict
    from pipelines.tracking.runs import TrackingUnavailable

    for cls in (ContractViolation, LedgerUnavailable, UnknownRequest, StateConflict, TrackingUnavailable):
        assert issubclass(cls, ASUError)
    for cls in (LedgerUnavailable, TrackingUnavailable):
        assert not issubclass(cls, ValueError) and cls.exit_code == 4
    assert str(UnknownRequest("no request 'x'")) == "no request 'x'"  # not KeyError's quoted repr
