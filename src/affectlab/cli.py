"""The ``affectlab`` command line: thin typer commands over the library.

Each command parses options, calls one library function and prints its result. Logic
lives in the library so the Python API and the CLI behave the same. Imports of heavy
modules happen inside the commands so ``affectlab --help`` stays fast.

Errors: an :class:`~affectlab.errors.AffectlabError` (and other expected input errors)
print as one line ``error: ...`` and exit with code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from affectlab import __version__

console = Console(stderr=True)

app = typer.Typer(
    name="affectlab",
    help=(
        "Facial affect analysis: expressions, valence/arousal and action units.\n\n"
        "Start with `affectlab synth --out demo --n 500` to make a synthetic dataset, or "
        "`affectlab analyze VIDEO.mp4 --out table.csv` to analyze faces. "
        "Every command has its own --help."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

_STATE = {"debug": False}


def _version_callback(value: bool):
    if value:
        typer.echo(f"affectlab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
):
    """Facial affect analysis: expressions, valence/arousal and action units."""
    _STATE["debug"] = debug


# --------------------------------------------------------------------------- commands
# Later modules register their commands below, one small function each.


data_app = typer.Typer(
    help="Inspect datasets: validate one and summarise its labels (`affectlab data check --help`).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(data_app, name="data")


@data_app.command("check")
def data_check_cmd(
    spec: str = typer.Argument(..., help="Dataset spec FORMAT:PATH[:SPLIT] (or a manifest path); the training split."),
    spec2: Optional[str] = typer.Argument(None, help="Optional second spec (validation split) to compare with SPEC."),
    plots: Optional[Path] = typer.Option(None, "--plots", help="Write the analysis figures (PNG) into this folder."),
    decode: bool = typer.Option(False, "--decode", help="Also decode every image and count unreadable ones (slow)."),
):
    """Validate a dataset and print its label statistics.

    Loads SPEC with the format's reader (which checks every annotation line), then prints:
    size, images missing on disk (dropped), samples per expression class with class weights,
    missing labels per descriptor, valence/arousal mean/std/median per class, AU prevalence
    with positive weights, labels per sample for multi-label sets, and with SPEC2 a
    train-vs-validation comparison. `--plots DIR` writes class distribution, VA circumplex
    histogram, VA box plots per class, AU prevalence and split comparison figures.

    Example: `affectlab data check ckplus:../shared/data/ckplus48 --plots ck_plots`, or
    `affectlab data check affectnet:/data/AffectNet:train affectnet:/data/AffectNet:val`.
    """
    from affectlab.data.check import check_dataset, render_report

    render_report(check_dataset(spec, spec2, plots=plots, decode=decode))


def main(argv: Optional[List[str]] = None) -> int:
    """Console-script entry point: run the app and turn expected errors into one line."""
    from affectlab.errors import AffectlabError

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        # standalone mode: typer/click print usage errors themselves and exit
        app(args=args, prog_name="affectlab")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        return 130
    except (AffectlabError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:
        if debug:
            raise
        console.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
        return 2
    except Exception as exc:  # unexpected: still one line, but say how to see more
        if debug:
            raise
        console.print(
            f"[bold red]error:[/bold red] {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
