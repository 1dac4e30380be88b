"""The ``catdog`` command line: data, train, evaluate, predict, export, serve.

Every user-facing failure is one sentence on stderr and a non-zero exit; ``--debug`` shows
the traceback instead.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    name="catdog",
    help="Recognise cats and dogs in photos: check data, train, evaluate, predict, export, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect and clean datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

err_console = Console(stderr=True)
DEBUG = {"on": False}


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
) -> None:
    DEBUG["on"] = debug


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one clear sentence and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def user_errors(func: Callable) -> Callable:
    """Turn catdog's own error types into one sentence and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from catdog.data.layout import DatasetError
        from catdog.images import ImageError
        from catdog.models.pretrained import ModelError

        try:
            return func(*args, **kwargs)
        except (DatasetError, ImageError, ModelError, ValueError, OSError) as err:
            if DEBUG["on"]:
                raise
            message = str(err) or type(err).__name__
            if isinstance(err, OSError) and err.filename:
                message = f"{err.strerror or 'cannot use'}: '{err.filename}'."
            raise fail(message) from None
        except KeyboardInterrupt:
            raise fail("Interrupted.", 130) from None

    return wrapper


@app.command()
@user_errors
def predict(
    paths: Annotated[list[str], typer.Argument(help="Image files, folders (searched recursively) or glob patterns.")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model directory or .onnx file; the built-in model if omitted.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list of predictions.")] = False,
    as_csv: Annotated[
        bool, typer.Option("--csv", help="Print CSV: path,label,confidence,<class probabilities>,error.")
    ] = False,
    threshold: Annotated[
        float | None, typer.Option(help="Answer 'unsure' when the confidence is below this probability.", min=0, max=1)
    ] = None,
    tta: Annotated[
        bool, typer.Option("--tta", help="Average the predictions of the photo and its mirror image.")
    ] = False,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.", min=1)] = 32,
) -> None:
    """Classify photos as cat, dog or neither."""
    if as_json and as_csv:
        raise fail("Choose one of --json and --csv.")
    from catdog.predict import Predictor, expand_inputs

    files, missing = expand_inputs(paths)
    predictor = Predictor.load(model, threshold=threshold, tta=tta)
    results = list(missing)
    results.extend(predictor.predict_paths(files, batch_size=batch_size))
    _print_predictions(results, predictor.classes, as_json=as_json, as_csv=as_csv)
    raise typer.Exit(1 if any(not r.ok for r in results) else 0)


def _print_predictions(results, classes: list[str], *, as_json: bool, as_csv: bool) -> None:
    if as_json:
        json.dump([r.to_dict() for r in results], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["path", "label", "confidence", *classes, "error"])
        for r in results:
            probs = r.probabilities or {}
            writer.writerow(
                [
                    r.source,
                    r.label or "",
                    r.confidence if r.confidence is not None else "",
                    *[probs.get(c, "") for c in classes],
                    r.error or "",
                ]
            )
        return
    out = Console(highlight=False, soft_wrap=True)
    for r in results:
        if r.ok:
            colour = {"cat": "magenta", "dog": "cyan"}.get(r.label or "", "yellow")
            out.print(f"{r.source}: [bold {colour}]{r.label}[/] ({r.confidence:.1%})")
        else:
            out.print(f"{r.source}: [red]error[/] {r.error}")


def main() -> None:
    """Console-script entry point."""
    # Quiet, predictable CPU threading unless the user chose otherwise.
    os.environ.setdefault("KMP_WARNINGS", "0")
    try:
        app()
    except BrokenPipeError:  # `catdog predict ... | head`
        sys.stderr.close()
        raise SystemExit(1) from None


if __name__ == "__main__":  # pragma: no cover
    main()
