"""``catdog data check`` and ``catdog data audit``."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console

from catdog.cli.app import data_app
from catdog.cli.errors import err_console, user_errors


@data_app.command("check")
@user_errors
def data_check(
    folder: Annotated[str, typer.Argument(help="Dataset folder: cat.1.jpg-style files or one folder per class.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON document with every finding; default: a summary table.")
    ] = False,
    quarantine: Annotated[
        str | None,
        typer.Option(
            help="Move unusable files and the extra copies of duplicates into this folder, keeping their "
            "relative paths (nothing is deleted; a photo found in several classes is moved in every copy). "
            "Default: only report."
        ),
    ] = None,
    near_distance: Annotated[
        int, typer.Option(help="Near-duplicates: perceptual hashes at most this many bits apart (of 64).", min=0)
    ] = 4,
    cache_dir: Annotated[
        str | None, typer.Option(help="Cache of per-file results; default $CATDOG_CACHE_DIR or ~/.cache/catdog.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Threads reading images; default: one per CPU core.", min=1)
    ] = None,
) -> None:
    """Report unusable files, duplicates, label conflicts, wrong extensions, unusual modes and tiny images.

    Photos per class are counted; those of a `neither` folder (neither/, other/ ...) are counted apart,
    as examples of what is not a cat or a dog, not as a class to train.

    Exit status 1 when problems were found (unusual modes and tiny images are only notes), 0 when clean.
    """
    from rich.progress import Progress

    from catdog.data.check import check_dataset, summary

    with Progress(console=err_console, transient=True, disable=as_json or not err_console.is_terminal) as bar:
        task = bar.add_task("checking", total=None)
        report = check_dataset(
            folder,
            quarantine_dir=quarantine,
            cache_dir=cache_dir,
            near_distance=near_distance,
            workers=workers,
            on_start=lambda n: bar.update(task, total=n),
            progress=lambda n: bar.advance(task, n),
        )
    if as_json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        out = Console(highlight=False, soft_wrap=True)
        for part in summary(report):
            out.print(part)
    raise typer.Exit(1 if report.problems else 0)


@data_app.command("audit")
@user_errors
def data_audit(
    data_dir: Annotated[str, typer.Argument(help="Labelled photos in any dataset layout.")],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Model directory, .onnx file or builtin-large giving the features; the built-in model.",
        ),
    ] = None,
    out: Annotated[
        str | None, typer.Option("--out", "-o", help="Write audit.html (thumbnails) and suspects.json here.")
    ] = None,
    folds: Annotated[int, typer.Option(help="Folds of the out-of-fold logistic regression.", min=2)] = 5,
    top: Annotated[int, typer.Option(help="How many suspects to print and show.", min=1)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print every suspect as JSON.")] = False,
) -> None:
    """List the photos most likely mislabelled: out-of-fold predictions that confidently disagree.

    Photos in a `neither` folder (neither/, other/ ...) are suspects when the model's gate sees a cat or a dog.
    """
    from catdog.audit import audit, neither_note, write_audit

    result = audit(data_dir, model, folds=folds)
    page = write_audit(result, out, top=top) if out else None
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    console = Console(highlight=False, soft_wrap=True)
    console.print(
        f"{result.n} photos, out-of-fold accuracy {result.out_of_fold_accuracy:.4f}{neither_note(result, '; ')}; "
        f"{len(result.suspects)} disagree with their label. Most likely mislabelled:"
    )
    for rank, s in enumerate(result.suspects[:top], 1):
        console.print(f"{rank:3d}. {s.path}: labelled {s.label}, looks like {s.suggested} ({s.confidence:.3f})")
    for item in result.unreadable:
        console.print(f"[yellow]unreadable[/] {item['error']}")
    if page:
        console.print(f"Report: {page}")
