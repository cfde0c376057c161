"""The public API: real functions a type checker can see, light to import, affectlab's own errors.

The Python functions raise the same exception, with the same one-line message, that the
CLI prints for the same mistake.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import affectlab
from affectlab.cli import main
from affectlab.errors import AffectlabError, ConfigError, DatasetError, ModelError

SRC = Path(__file__).resolve().parents[1] / "src"
PUBLIC_FUNCTIONS = ("analyze", "load_dataset", "train", "evaluate", "explain", "extract_features", "load_model",
                    "list_models")


def _python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_public_names_are_real_functions_and_classes():
    for name in PUBLIC_FUNCTIONS:
        assert inspect.isfunction(getattr(affectlab, name)), name
    assert inspect.isclass(affectlab.Predictor) and inspect.isclass(affectlab.LabelSpace)
    assert issubclass(affectlab.UnsafeModelError, affectlab.ModelError)
    assert set(PUBLIC_FUNCTIONS) <= set(affectlab.__all__)
    # importing the implementing subpackages' modules, in any order, leaves the functions bound
    code = (
        "import affectlab.evaluate.engine, affectlab.analyze.table, affectlab.train.engine, affectlab, inspect; "
        "print(all(inspect.isfunction(getattr(affectlab, n)) for n in ('analyze', 'train', 'evaluate')))"
    )
    assert _python(code) == "True"


def test_import_affectlab_is_light():
    code = "import sys, affectlab; print(sorted(m for m in ('torch', 'lightning', 'pandas', 'numpy') if m in sys.modules))"
    assert _python(code) == "[]"


def test_a_type_checker_sees_the_implementations():
    # under TYPE_CHECKING the package imports the implementing functions themselves
    import ast

    tree = ast.parse((SRC / "affectlab" / "__init__.py").read_text())
    checked = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for stmt in node.body:
                if isinstance(stmt, ast.ImportFrom):
                    checked |= {a.asname or a.name for a in stmt.names}
    assert set(PUBLIC_FUNCTIONS) | {"Predictor", "LabelSpace", "AffectTable"} <= checked


def _cli_error(argv, capsys) -> str:
    code = main(argv)
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2, err
    assert err.startswith("error: ")
    return err[len("error: "):]


def _same(exc: BaseException, cli: str) -> None:
    assert isinstance(exc, AffectlabError)
    assert " ".join(str(exc).split()) == cli


def test_api_errors_are_the_cli_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError) as info:
        affectlab.evaluate("no-such-model", "manifest:x.csv")
    _same(info.value, _cli_error(["evaluate", "--model", "no-such-model", "--data", "manifest:x.csv"], capsys))

    with pytest.raises(DatasetError) as info:
        affectlab.load_dataset("rafdb:/no/such/folder")
    _same(info.value, _cli_error(["datasets", "rafdb:/no/such/folder"], capsys))

    with pytest.raises(ConfigError) as info:
        affectlab.train(method="baseline", train_specs=["manifest:x.csv"], out=None)
    _same(info.value, _cli_error(["train", "--method", "baseline", "--train", "manifest:x.csv"], capsys))

    (tmp_path / "a.jpg").write_bytes(b"")
    with pytest.raises(ConfigError) as info:
        affectlab.analyze("a.jpg", smooth="often")
    _same(info.value, _cli_error(["analyze", "a.jpg", "--smooth", "often", "--out", "t.csv"], capsys))
