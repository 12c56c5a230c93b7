from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from dlpipe.cli import main as cli


def _all_parsers(parser: argparse.ArgumentParser, path=()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _all_parsers(sub, (*path, name))


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    paths = [p for p, _ in _all_parsers(cli.build_parser())]
    assert ("stack", "up") in paths and ("smoke",) in paths and ("demo",) in paths
    assert {("produce",), ("ingest",), ("export",)} <= set(paths)
    for path in paths:
        with pytest.raises(SystemExit) as done:
            cli.main([*path, "--help"])
        assert done.value.code == 0
        assert "usage: dlpipe" in capsys.readouterr().out


def test_console_script_is_installed() -> None:
    out = subprocess.run([sys.executable, "-m", "dlpipe.cli.main", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "stack" in out.stdout


def test_errors_print_cause_and_fix_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["stack", "status", "--config", "/nonexistent/pipeline.yaml"])
    err = capsys.readouterr().err
    assert code == 2
    assert "config file not found: /nonexistent/pipeline.yaml" in err
    assert "fix: pass --config PATH or set DLPIPE_CONFIG" in err
    assert "Traceback" not in err


def test_unknown_smoke_step_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["smoke", "--steps", "delta,nope"])
    assert done.value.code == 2
    assert "unknown step(s) nope" in capsys.readouterr().err
