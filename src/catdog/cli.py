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
import time
from collections.abc import Callable, Iterable
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    name="catdog",
    help="Recognise cats and dogs in photos: check data, train, evaluate, predict, export, serve.",
    epilog="Options of one command: catdog COMMAND --help. Guides: README.md and docs/ in catdog's source "
    "(predict-and-serve.md, training.md, data.md, benchmarks.md, design.md).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect and clean datasets: check, audit.", no_args_is_help=True)
app.add_typer(data_app, name="data")

err_console = Console(stderr=True)
DEBUG = {"on": False}


def _print_version(value: bool) -> None:
    if value:
        from catdog import __version__

        typer.echo(f"catdog {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print catdog's version and exit."),
    ] = False,
) -> None:
    DEBUG["on"] = debug


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one clear sentence and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


# The exit status of a failure that is catdog's fault, not the input's: EX_SOFTWARE of sysexits.h.
INTERNAL_ERROR = 70


def user_errors(func: Callable) -> Callable:
    """Turn catdog's own error types into one sentence and exit status 2.

    Anything else but running out of memory is a bug, not a bad input: it gets one sentence too, that
    says so, and status 70.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from catdog.errors import CatdogError

        try:
            return func(*args, **kwargs)
        except (CatdogError, OSError) as err:
            if DEBUG["on"]:
                raise
            message = str(err) or type(err).__name__
            if isinstance(err, OSError) and err.filename:
                message = f"{err.strerror or 'cannot use'}: '{err.filename}'."
            raise fail(message) from None
        except KeyboardInterrupt:
            raise fail("Interrupted.", 130) from None
        except typer_exits():
            raise
        except Exception as err:
            if DEBUG["on"]:
                raise
            raise fail(unexpected(err), 2 if out_of_memory(err) else INTERNAL_ERROR) from None

    return wrapper


def typer_exits() -> tuple[type[BaseException], ...]:
    """typer's own ways out: an exit status, an abort, a usage error (typer 0.29 vendors click's)."""
    import click

    kinds = [typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.Abort, click.ClickException]
    vendored = getattr(getattr(typer, "exceptions", None), "TyperException", None)
    return tuple(kinds + ([vendored] if vendored else []))


def out_of_memory(err: BaseException) -> bool:
    """A MemoryError, or torch's CPU or GPU allocator giving up (RuntimeError subclasses)."""
    text = str(err).lower()
    return isinstance(err, MemoryError) or "out of memory" in text or "can't allocate memory" in text


def unexpected(err: BaseException) -> str:
    """One sentence for an exception catdog did not expect (its first line, shortened)."""
    if out_of_memory(err):
        return "Ran out of memory; try a smaller --batch-size or --image-size, or fewer --workers."
    lines = str(err).strip().splitlines()
    detail = f": {lines[0][:200]}" if lines else ""
    return (
        f"catdog stopped on an unexpected {type(err).__name__}{detail}. Run the command again with --debug to see "
        "where; if the input looks right, please report it."
    )


NeitherThreshold = Annotated[
    float | None,
    typer.Option(
        help="Answer 'neither' when P(cat or dog) is below this (default: the model's own, set to turn away "
        "at most 0.5% of pets; higher is stricter).",
        min=0,
        max=1,
    ),
]


@app.command()
@user_errors
def predict(
    paths: Annotated[list[str], typer.Argument(help="Image files, folders (searched recursively) or glob patterns.")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model directory or .onnx file; the built-in model if omitted.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list of predictions.")] = False,
    as_csv: Annotated[
        bool, typer.Option("--csv", help="Print CSV: path,label,confidence,<probabilities: cat,dog,neither>,error.")
    ] = False,
    threshold: Annotated[
        float | None, typer.Option(help="Answer 'unsure' when the confidence is below this probability.", min=0, max=1)
    ] = None,
    neither_threshold: NeitherThreshold = None,
    tta: Annotated[
        bool, typer.Option("--tta", help="Average the predictions of the photo and its mirror image.")
    ] = False,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.", min=1)] = 32,
) -> None:
    """Classify photos as cat, dog or neither."""
    if as_json and as_csv:
        raise fail("Choose one of --json and --csv.")
    from catdog.inference.predictor import Predictor, expand_inputs

    entries = expand_inputs(paths)
    predictor = Predictor.load(
        model, threshold=threshold, neither_threshold=neither_threshold, tta=tta, throughput=True
    )
    from catdog.inference.sharding import predict_sharded

    # Under torchrun, files are sharded over the ranks and rank 0 prints them all in input order.
    predictions = predict_sharded(predictor, [e for e in entries if isinstance(e, str)], batch_size=batch_size)
    if predictions is None:
        return
    predicted = iter(predictions)
    results = (next(predicted) if isinstance(e, str) else e for e in entries)  # streamed, in input order
    failed = _print_predictions(results, predictor.answers, as_json=as_json, as_csv=as_csv)
    raise typer.Exit(1 if failed else 0)


def _print_predictions(results: Iterable, classes: list[str], *, as_json: bool, as_csv: bool) -> bool:
    """Print each prediction as soon as it is known (a long job shows its progress); True if any failed."""
    failed = False
    if as_json:  # the same text as json.dump(list, indent=2), one element at a time
        sys.stdout.write("[")
        count = 0
        for count, r in enumerate(results, 1):
            failed |= not r.ok
            element = json.dumps(r.to_dict(), indent=2).replace("\n", "\n  ")
            sys.stdout.write(("," if count > 1 else "") + "\n  " + element)
        sys.stdout.write("\n]\n" if count else "]\n")
        return failed
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["path", "label", "confidence", *classes, "error"])
        for r in results:
            failed |= not r.ok
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
        return failed
    out = Console(highlight=False, soft_wrap=True)
    for r in results:
        failed |= not r.ok
        if r.ok:
            colour = {"cat": "magenta", "dog": "cyan"}.get(r.label or "", "yellow")
            seen = f" [dim]no cat or dog; looks like: {r.looks_like} ({r.looks_like_means})[/]" if r.looks_like else ""
            out.print(f"{r.source}: [bold {colour}]{r.label}[/] ({r.confidence:.1%}){seen}")
        else:
            out.print(f"{r.source}: [red]error[/] {r.error}")
    return failed


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


@app.command()
@user_errors
def serve(
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model directory or .onnx file; the built-in model if omitted.")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 opens the server to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=0, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(help="Server processes, each with its own copy of the model.", min=1)] = 1,
    max_file_mb: Annotated[float, typer.Option(help="Largest photo accepted, in MB (413 above).", min=0.01)] = 10.0,
    max_megapixels: Annotated[
        float, typer.Option(help="Most pixels in one photo, in millions (413 above).", min=0.01)
    ] = 40.0,
    max_files: Annotated[int, typer.Option(help="Most photos in one batch request (413 above).", min=1)] = 32,
    max_concurrent: Annotated[
        int, typer.Option(help="API requests being worked on at once, uploads complete (503 above).", min=1)
    ] = 64,
    max_uploads: Annotated[
        int, typer.Option(help="API requests still uploading at once (503 above); memory: this x --max-file-mb.", min=1)
    ] = 128,
    timeout: Annotated[float, typer.Option(help="Seconds one API request may take (503 after).", min=0.1)] = 30.0,
    batch_size: Annotated[int, typer.Option(help="Most images in one forward pass (micro-batching).", min=1)] = 32,
    batch_wait_ms: Annotated[
        float, typer.Option(help="How long a forward pass waits for more images, in ms.", min=0)
    ] = 5.0,
    threshold: Annotated[
        float | None, typer.Option(help="Answer 'unsure' below this confidence (default: never).", min=0, max=1)
    ] = None,
    neither_threshold: NeitherThreshold = None,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request (default: off).")] = False,
) -> None:
    """Serve the web page and the JSON API (OpenAPI docs at /docs)."""
    import uvicorn

    from catdog.serve.app import SETTINGS_ENV, ServeSettings, create_app

    if model is not None and not os.path.exists(model):
        raise fail(f"Model '{model}' does not exist; give a model directory or an .onnx file, or omit --model.")
    settings = ServeSettings(
        model=model,
        max_file_bytes=int(max_file_mb * 1e6),
        max_pixels=int(max_megapixels * 1e6),
        max_files=max_files,
        max_concurrent=max_concurrent,
        max_uploads=max_uploads,
        timeout=timeout,
        max_batch=batch_size,
        max_wait_ms=batch_wait_ms,
        threshold=threshold,
        neither_threshold=neither_threshold,
    )
    err_console.print(f"catdog: serving on http://{host}:{port} (the model loads in the background; /readyz)")
    options = dict(
        host=host, port=port, access_log=access_log, server_header=False, timeout_graceful_shutdown=timeout + 5
    )
    if workers == 1:
        uvicorn.run(create_app(settings), **options)
    else:  # worker processes import the app themselves, so the settings travel in the environment
        os.environ[SETTINGS_ENV] = settings.to_json()
        uvicorn.run("catdog.serve.app:app_from_env", factory=True, workers=workers, **options)


@app.command(short_help="Measure a model on labelled photos: metrics, plots, a report.")
@user_errors
def evaluate(
    model: Annotated[
        str | None, typer.Argument(help="Model directory or .onnx file; the built-in model if omitted.")
    ] = None,
    data_dir: Annotated[
        str | None, typer.Argument(help="Labelled photos in any dataset layout (cat.1.jpg, cat/ dog/, PetImages).")
    ] = None,
    out: Annotated[
        str | None, typer.Option("--out", "-o", help="Write plots, a gallery of mistakes and report.html here.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    robust: Annotated[
        bool, typer.Option("--robustness", help="Also measure accuracy under 7 corruptions at 3 severities.")
    ] = False,
    robustness_samples: Annotated[int, typer.Option(help="Photos used for --robustness.", min=1)] = 300,
    tta: Annotated[bool, typer.Option("--tta", help="Average the photo and its mirror image.")] = False,
    threshold: Annotated[
        float | None, typer.Option(help="Answer 'unsure' (counted wrong) below this confidence.", min=0, max=1)
    ] = None,
    neither_threshold: NeitherThreshold = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.", min=1)] = 32,
    split: Annotated[
        str,
        typer.Option(
            help="all photos, or only those the model's training run put in its train, val or test split "
            "(by content hash, with the fractions the model records)."
        ),
    ] = "all",
) -> None:
    """Measure a model on labelled photos: accuracy, log loss, ROC AUC, calibration, robustness."""
    if data_dir is None:  # `catdog evaluate DATA_DIR` uses the built-in model
        model, data_dir = None, model
    if data_dir is None:
        raise fail("Give the folder of labelled photos to evaluate on: catdog evaluate [MODEL] DATA_DIR.")
    from catdog.evaluate import evaluate as run_evaluate

    result = run_evaluate(
        model,
        data_dir,
        out_dir=out,
        with_robustness=robust,
        robustness_samples=robustness_samples,
        batch_size=batch_size,
        tta=tta,
        threshold=threshold,
        neither_threshold=neither_threshold,
        split=split,
    )
    if as_json:
        print(json.dumps(result, indent=2))
        return
    _print_evaluation(result)


def _print_evaluation(result: dict) -> None:
    from rich.table import Table

    out = Console(highlight=False, soft_wrap=True)
    part = "" if result.get("split", "all") == "all" else f" of its {result['split']} split"
    table = Table(title=f"{result['model']} on {result['n']} photos{part}")
    for column in ("class", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="right")
    for c in result["classes"]:
        table.add_row(c, *(f"{result[k][c]:.4f}" for k in ("precision", "recall", "f1")), str(result["support"][c]))
    out.print(table)
    auc = "n/a" if result["roc_auc"] is None else f"{result['roc_auc']:.4f}"
    out.print(
        f"accuracy {result['accuracy']:.4f}  log loss {result['log_loss']:.4f}  ROC AUC {auc}  ECE {result['ece']:.4f}"
    )
    if result["neither"] or result["unsure"]:
        out.print(f"answered 'neither' {result['neither']} times and 'unsure' {result['unsure']} times (counted wrong)")
    if "open_set" in result:
        o = result["open_set"]
        out.print(f"pets versus neither ({o['n_pets']} pets, {o['n_neither']} 'neither' photos, not counted above):")
        if not o["gate"]:
            out.print(f"  {o['note']}")
        else:

            def fmt(value: float | None) -> str:
                return "n/a" if value is None else f"{value:.4f}"

            out.print(
                f"  ROC AUC {fmt(o['roc_auc'])}  neither answered 'neither' {fmt(o['neither_answered'])}  "
                f"pets turned away {fmt(o['pets_turned_away'])}  (threshold {o['threshold']:.4g})"
            )
            out.print(
                f"  FPR at 95% TPR {fmt(o['fpr_at_95_tpr'])} (neither photos scoring at least "
                f"{fmt(o['score_at_95_tpr'])}, the P(cat or dog) that keeps 95% of pets)"
            )
    if result["unreadable"]:
        out.print(f"[yellow]{len(result['unreadable'])} unreadable files[/]:")
        for item in result["unreadable"]:
            out.print(f"  {item['error']}")
    if "robustness" in result:
        r = result["robustness"]
        table = Table(title=f"accuracy under corruptions ({r['n']} photos, clean {r['clean']:.3f})")
        for column in ("corruption", "severity 1", "2", "3"):
            table.add_column(column, justify="right")
        for name, values in r["accuracy"].items():
            table.add_row(name, *(f"{v:.3f}" for v in values))
        out.print(table)
    if "report" in result:
        out.print(f"Report: {result['report']}")


@data_app.command("audit")
@user_errors
def data_audit(
    data_dir: Annotated[str, typer.Argument(help="Labelled photos in any dataset layout.")],
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Model directory or .onnx file giving the features; the built-in model."),
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


@app.command(short_help="Grad-CAM heat map: where in the photo the decision rests.")
@user_errors
def explain(
    model: Annotated[str | None, typer.Argument(help="Model directory; the built-in model if only IMAGE is given.")],
    image: Annotated[str | None, typer.Argument(help="The photo to explain.")] = None,
    out: Annotated[
        str | None, typer.Option("--out", "-o", help="Overlay PNG to write; default IMAGE-gradcam.png here.")
    ] = None,
    class_name: Annotated[
        str | None, typer.Option("--class", help="Explain this class instead of the model's answer.")
    ] = None,
) -> None:
    """Grad-CAM: a heat map of where in the photo the model's decision rests."""
    if image is None:  # `catdog explain IMAGE` uses the built-in model
        model, image = None, model
    if image is None:
        raise fail("Give the photo to explain: catdog explain [MODEL] IMAGE --out heat.png.")
    from pathlib import Path

    from catdog.explain import explain as run_explain
    from catdog.explain import overlay
    from catdog.fsutil import atomic_write

    explanation = run_explain(model, image, class_name=class_name)
    target = Path(out or f"{Path(image).stem}-gradcam.png")
    picture = overlay(explanation)
    atomic_write(target, lambda tmp: picture.save(tmp, "PNG"))
    probs = ", ".join(f"{c} {p:.3f}" for c, p in explanation.probabilities.items())
    Console(highlight=False, soft_wrap=True).print(
        f"{image}: {explanation.label} ({probs}); heat map for '{explanation.explained}' written to {target}"
    )


@app.command(short_help="Export a model to ONNX (fp32 or int8), checked against PyTorch.")
@user_errors
def export(
    model: Annotated[
        str | None, typer.Argument(help="Model directory written by 'catdog train'; the built-in model if omitted.")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="'onnx' (one file) or 'web' (the phone app as a static folder, --out DIR).")
    ] = "onnx",
    int8: Annotated[
        bool, typer.Option("--int8", help="Quantize to int8 with ONNX Runtime (checked against fp32 on real photos).")
    ] = False,
    out: Annotated[
        str | None, typer.Option("--out", "-o", help="Output file; default MODEL/model.onnx (model-int8.onnx).")
    ] = None,
    check_data: Annotated[
        str | None,
        typer.Option(help="Labelled photos (any dataset layout) for the parity check; default: the training data."),
    ] = None,
    check_images: Annotated[
        int | None,
        typer.Option(help="How many photos the parity checks use [default: 300; 2,000 for int8's agreement].", min=8),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the parity report as JSON.")] = False,
) -> None:
    """Export a model to a self-contained ONNX file, refusing one that does not match PyTorch."""
    if fmt.lower() not in ("onnx", "web"):
        raise fail(f"Unknown format '{fmt}'; catdog exports 'onnx' or 'web'.")
    if fmt.lower() == "web":
        from catdog.webapp import write_web

        target = out or (os.path.join(model, "app") if model else "catdog-app")
        config = write_web(model, target, int8=int8, check_dir=check_data, n_check=check_images)
        print(json.dumps({"path": target, **{k: v for k, v in config.items() if k != "imagenet"}}, indent=2)
              if as_json else f"Wrote the phone app to {target}/ (model {config['model_bytes'] / 1e6:.1f} MB): serve "
              "the folder over HTTPS from any static host (its _headers file lists the headers to send).")  # fmt: skip
        return
    from catdog.export import export as run_export

    suffix = "model-int8.onnx" if int8 else "model.onnx"
    target = out or (os.path.join(model, suffix) if model else f"catdog-builtin{'-int8' if int8 else ''}.onnx")
    report = run_export(model, target, int8=int8, check_dir=check_data, n_check=check_images)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
        return
    line = f"Wrote {report.path}: max |Δprobability| vs PyTorch {report.fp32_max_gap:.1e} on {report.n_check} photos"
    if report.int8:
        line += (
            f"; int8 agrees with fp32 on {report.agreement:.1%} of {report.n_check_int8} photos, "
            f"accuracy {report.accuracy_int8:.1f}% "
            f"(fp32 {report.accuracy_fp32:.1f}%)"
        )
    Console(highlight=False, soft_wrap=True).print(line + ".")


@app.command(short_help="Train a model on a dataset folder (CPU, GPU or torchrun).")
@user_errors
def train(
    data_dir: Annotated[str, typer.Argument(help="Dataset folder: cat.1.jpg-style files, or one folder per class.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Model directory to write.")],
    model: Annotated[
        str, typer.Option("--model", "-m", help="seed-cnn, catnet, or a timm backbone (e.g. tf_efficientnet_lite0).")
    ] = "catnet",
    freeze: Annotated[
        str,
        typer.Option(
            help="'none': all layers train; 'backbone': only a new head, on cached backbone features; "
            "'stages:N': the stem and first N stages frozen, the later ones fine-tune on their cached output."
        ),
    ] = "none",
    epochs: Annotated[
        int | None, typer.Option(help="Epochs; default 30 from scratch, 10 fine-tuning, 40 for a frozen head.", min=1)
    ] = None,
    time_budget: Annotated[
        float | None,
        typer.Option(help="Minutes for the whole run (decoding, features, training, final evaluation).", min=0.01),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            help="Global batch size; default 64 from scratch or with stages:N, 32 fine-tuning, 256 head.", min=1
        ),
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate; default depends on the model.", min=0)] = None,
    optimizer: Annotated[str | None, typer.Option(help="adamw or adam; default adamw (adam for seed-cnn).")] = None,
    weight_decay: Annotated[
        float | None, typer.Option(help="Weight decay; default depends on the model.", min=0)
    ] = None,
    layer_decay: Annotated[
        float | None,
        typer.Option(
            help="Fine-tuning: learning-rate factor per earlier block; default 0.7 (0.8 with stages:N).", min=0, max=1
        ),
    ] = None,
    schedule: Annotated[str, typer.Option(help="cosine (with warm-up) or onecycle.")] = "cosine",
    warmup_epochs: Annotated[float, typer.Option(help="Linear warm-up length in epochs (cosine).", min=0)] = 1.0,
    label_smoothing: Annotated[
        float | None, typer.Option(help="Label smoothing of the loss; default 0.1 (0 for seed-cnn).", min=0, max=0.5)
    ] = None,
    mixup: Annotated[float, typer.Option(help="MixUp alpha (0 = off).", min=0)] = 0.0,
    cutmix: Annotated[float, typer.Option(help="CutMix alpha (0 = off).", min=0)] = 0.0,
    image_size: Annotated[
        int | None, typer.Option(help="Input side in pixels; default 128 from scratch, the backbone's own.", min=8)
    ] = None,
    test_image_size: Annotated[
        int | None,
        typer.Option(
            help="Validate the final model, and predict, at this side (e.g. 288 for a 224 backbone: nets trained "
            "on random crops do better a little larger); default: the input side.",
            min=8,
        ),
    ] = None,
    feature_views: Annotated[
        int,
        typer.Option(
            help="--freeze backbone or stages:N: views cached per training image (1, 2 + mirror, more augmented).",
            min=1,
        ),
    ] = 2,
    val_fraction: Annotated[
        float, typer.Option(help="Share of images held out for validation.", min=0.01, max=0.9)
    ] = 0.1,
    test_fraction: Annotated[
        float,
        typer.Option(
            help="Share of images held out for a final test no training choice sees "
            "(catdog evaluate MODEL DIR --split test); default none.",
            min=0,
            max=0.5,
        ),
    ] = 0.0,
    patience: Annotated[
        int | None, typer.Option(help="Stop after this many epochs without a better validation loss.", min=1)
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    deterministic: Annotated[
        bool, typer.Option("--deterministic", help="Deterministic algorithms (exactly reproducible, slower).")
    ] = False,
    precision: Annotated[
        str,
        typer.Option(
            help="auto (bf16 on GPU, and from scratch on a CPU with AMX, where it measured 2x faster; else fp32), "
            "fp32, bf16 or fp16."
        ),
    ] = "auto",
    channels_last: Annotated[bool, typer.Option(help="Use the channels-last memory format.")] = True,
    compile: Annotated[bool, typer.Option("--compile", help="Compile the model with torch.compile.")] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Processes that decode photos (validation at --test-image-size, or a data set too big for the "
            "GPU); default one (GPU: one per core). Training images come from the pixel cache without them.",
            min=0,
        ),
    ] = None,
    cache_dir: Annotated[
        str | None, typer.Option(help="Cache of decoded images and features; default $CATDOG_CACHE_DIR or ~/.cache.")
    ] = None,
    checkpoint_seconds: Annotated[
        float, typer.Option(help="Checkpoint at least this often (and after every epoch); 0: every step.", min=0)
    ] = 60.0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the unfinished run in --out.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a model already in --out.")] = False,
) -> None:
    """Train a classifier on a dataset folder and write a model directory."""
    options = dict(locals())  # every parameter above is a TrainConfig field of the same name
    started = time.monotonic()  # the time budget includes importing torch and timm
    from catdog.training.config import TrainConfig
    from catdog.training.recipe import train as run_training

    run_training(TrainConfig(**options), started=started)


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
