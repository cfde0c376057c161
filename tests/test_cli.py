"""The command line as a user meets it: version, help, one-line errors, --debug."""

import subprocess
import sys

import pytest

from affectlab import __version__
from affectlab.cli import app, main


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"affectlab {__version__}"


def test_help_lists_the_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("analyze", "synth", "train", "evaluate", "datasets", "data", "transfer-va"):
        assert command in out


def test_every_command_has_help_with_an_example(capsys):
    names = [c.name for c in app.registered_commands]
    assert len(names) >= 6
    for name in names:
        assert main([name, "--help"]) == 0, name
        text = capsys.readouterr().out
        assert "Usage" in text, name
        assert "xample" in text or "affectlab " in text, f"{name} --help shows no example"


def test_unknown_command_is_a_usage_error(capsys):
    assert main(["no-such-command"]) == 2
    assert "No such command" in capsys.readouterr().err


def test_bad_input_is_one_line_without_traceback(tmp_path, capsys):
    code = main(["synth", "--out", str(tmp_path / "s"), "--n", "-3"])
    err = capsys.readouterr().err
    assert code == 2
    assert "error:" in err and "-3" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_debug_shows_the_traceback(tmp_path):
    from affectlab.errors import ConfigError

    with pytest.raises(ConfigError):
        main(["--debug", "synth", "--out", str(tmp_path / "s"), "--n", "-3"])


def test_console_script_runs_in_a_fresh_process():
    proc = subprocess.run(
        [sys.executable, "-m", "affectlab.cli", "--version"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and __version__ in proc.stdout


def test_python_dash_m_runs_the_same_cli(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "affectlab", "--version"], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.strip() == f"affectlab {__version__}"
    bad = subprocess.run(
        [sys.executable, "-m", "affectlab", "synth", "--out", str(tmp_path / "s"), "--n", "-3"],
        capture_output=True, text=True,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "n" in bad.stderr
