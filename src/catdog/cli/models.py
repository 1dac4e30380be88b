"""``catdog evaluate``, ``catdog explain`` and ``catdog export``: measure, look inside, ship a model."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from catdog.cli.app import NeitherThreshold, PhotosRequired, PlainHelp, app, as_typed, probability
from catdog.cli.errors import fail, printing, refuse_unwritable, user_errors
from catdog.cli.output import percents, print_evaluation, print_json, refuse_lost_output
from catdog.models.files import BUILTIN_MODELS, builtin_name, is_onnx_model, names_a_model


@app.command(short_help="Measure a model on labelled photos: metrics, plots, a report.", cls=PhotosRequired)
@user_errors
def evaluate(
    ctx: typer.Context,
    model: Annotated[
        str | None,
        typer.Argument(
            metavar="MODEL", help="Model directory, .onnx file or builtin-large; the built-in model if omitted."
        ),
    ] = None,
    data_dir: Annotated[
        str | None,
        typer.Argument(
            metavar="DATA_DIR",
            help="Labelled photos in any dataset layout (cat.1.jpg, cat/ dog/, PetImages); one argument alone is "
            "DATA_DIR.  [required]",
        ),
    ] = None,
    out: Annotated[
        str | None,
        typer.Option("--out", "-o", metavar="DIR", help="Write plots, a gallery of mistakes and report.html here."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    robust: Annotated[
        bool, typer.Option("--robustness", help="Also measure accuracy under 7 corruptions at 3 severities.")
    ] = False,
    robustness_samples: Annotated[int, typer.Option(metavar="N", help="Photos used for --robustness.", min=1)] = 300,
    tta: Annotated[bool, typer.Option("--tta", help="Average the photo and its mirror image.")] = False,
    threshold: Annotated[
        float | None,
        typer.Option(
            metavar="P",
            help="Answer 'unsure' (counted wrong) below this confidence, 0 to 1 (default: never).",
            callback=probability,
        ),
    ] = None,
    neither_threshold: NeitherThreshold = None,
    batch_size: Annotated[int, typer.Option(metavar="N", help="Images per forward pass.", min=1)] = 32,
    split: Annotated[
        str,
        typer.Option(
            help="Which photos to measure: all, or only those the model's training run put in its train, val or "
            "test split (by content hash, with the fractions the model records)."
        ),
    ] = "all",
) -> None:
    """Measure a model on labelled photos: accuracy, log loss, ROC AUC, calibration, robustness."""
    if data_dir is None:  # `catdog evaluate DATA_DIR` uses the built-in model
        if model is not None and names_a_model(model):  # else its refusal would call the model a dataset
            command = as_typed(ctx, Path(model), "DATA_DIR") or "the model, then the folder of photos"
            raise fail(f"'{model}' is a model; give the labelled photos to measure it on too: {command}.")
        model, data_dir = None, model
    if data_dir is None:
        command = as_typed(ctx, "DATA_DIR") or "catdog evaluate DATA_DIR"  # or: an option's value cannot be pasted
        raise fail(f"Give the folder of labelled photos to evaluate on, as in {command}; a model of yours goes first.")
    refuse_unwritable(out, "folder")
    # With --out the metrics are in its report too; only what is printed is lost to a closed standard output.
    refuse_lost_output(
        "the metrics", "metrics.json" if as_json else "metrics.txt", also_in_files=out is not None and not as_json
    )
    from catdog.evaluate import evaluate as run_evaluate
    from catdog.fsutil import printable

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
    for warning in result["warnings"]:
        print(printable(f"note: {warning}"), file=sys.stderr)
    if as_json:
        print_json(result)
        return
    print_evaluation(result)


@app.command(short_help="Grad-CAM heat map: where in the photo the decision rests.", cls=PhotosRequired)
@user_errors
def explain(
    ctx: typer.Context,
    model: Annotated[
        str | None,
        typer.Argument(
            metavar="MODEL", help="Model directory or builtin-large; the built-in model if only IMAGE is given."
        ),
    ] = None,
    image: Annotated[
        str | None,
        typer.Argument(metavar="IMAGE", help="The photo to explain; one argument alone is IMAGE.  [required]"),
    ] = None,
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            "-o",
            metavar="FILE",
            help="Overlay to write (.png, .jpg or .webp); default IMAGE-gradcam.png here.",
        ),
    ] = None,
    class_name: Annotated[
        str | None, typer.Option("--class", help="Explain this class instead of the model's answer.")
    ] = None,
) -> None:
    """Grad-CAM: a heat map of where in the photo the model's decision rests."""
    if image is None:  # `catdog explain IMAGE` uses the built-in model
        if is_onnx_model(model) and names_a_model(model):
            _refuse_onnx(ctx, model, None)
        if model is not None and names_a_model(model):  # else its refusal would call the model a photo
            command = as_typed(ctx, Path(model), "IMAGE") or "the model, then the photo"
            raise fail(f"'{model}' is a model; give the photo to explain too: {command}.")
        model, image = None, model
    if image is None:
        command = as_typed(ctx, "IMAGE") or "catdog explain IMAGE"  # or: an option's value cannot be pasted
        raise fail(f"Give the photo to explain, as in {command}; a model of yours goes first.")
    if is_onnx_model(model):
        _refuse_onnx(ctx, model, image)

    from catdog.explain import explain as run_explain
    from catdog.explain import overlay
    from catdog.fsutil import atomic_write, shown

    # The heat map is the result; the line printed says what it shows. A full standard output failed after it.
    refuse_lost_output("the answer and its probabilities", "explain.txt", also_in_files=True)
    target = Path(out or f"{Path(image).stem}-gradcam.png")
    picture_format = OVERLAY_FORMATS.get(target.suffix.lower())
    if picture_format is None:
        raise fail(f"--out '{target}' must name a .png, .jpg or .webp file: the format of the heat map.")
    refuse_unwritable(str(target), "file")
    if target.exists() and Path(image).exists() and target.samefile(image):
        raise fail(f"--out '{target}' is the photo itself; give another file name so the photo is kept.")
    explanation = run_explain(model, image, class_name=class_name)
    picture = overlay(explanation)
    atomic_write(target, lambda tmp: picture.save(tmp, picture_format))
    probs = percents(explanation.probabilities)  # as the page and the app list them, adding up to 100 %
    with printing():
        Console(highlight=False, soft_wrap=True, emoji=False).print(
            shown(f"{image}: {explanation.label} ({probs}); heat map for '{explanation.explained}' written to {target}")
        )


def _refuse_onnx(ctx: typer.Context, model: str, image: str | None) -> None:
    """Refuse an .onnx file, which Grad-CAM cannot use, with the command that works: the shipped model that
    `catdog export` names the file after (catdog-builtin.onnx), the model directory it was exported into
    (MODEL/model.onnx), else a placeholder for that directory."""
    folder = Path(model).parent
    shipped = next((name for name in BUILTIN_MODELS if Path(model).name in _shipped_exports(name)), None)
    if shipped == "builtin":  # the model explain runs when given only the photo
        advice, given = "give only the photo, for the built-in model it was exported from", None
    elif shipped is not None:
        advice, given = f"give {shipped}, which it was exported from, and the photo to explain", shipped
    elif names_a_model(str(folder)):
        advice, given = f"give its model directory '{folder}' and the photo to explain", folder
    else:
        advice, given = "give the model directory it was exported from and the photo to explain", "MODEL_DIR"
    models = [] if given is None else [given]
    command = as_typed(ctx, *models, "IMAGE" if image is None else Path(image))
    if command is None:  # a word typed cannot be pasted
        command = " ".join(["catdog explain", *([] if given is None else [shipped or "MODEL_DIR"]), "IMAGE"])
    raise fail(
        f"'{model}' is an ONNX model, which Grad-CAM cannot use (it needs PyTorch's gradients); {advice}: {command}."
    )


def _shipped_exports(name: str) -> tuple[str, str]:
    """The files `catdog export` writes for the shipped model ``name`` by default: fp32 and int8."""
    return f"catdog-{name}.onnx", f"catdog-{name}-int8.onnx"


OVERLAY_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}  # by the --out suffix


@app.command(short_help="Export a model to ONNX (fp32 or int8), checked against PyTorch.", cls=PlainHelp)
@user_errors
def export(
    model: Annotated[
        str | None,
        typer.Argument(
            metavar="MODEL",
            help="Model directory written by 'catdog train', or builtin-large; the built-in model if omitted.",
        ),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="'onnx' (one file) or 'web' (the phone app as a static folder, --out DIR).")
    ] = "onnx",
    int8: Annotated[
        bool, typer.Option("--int8", help="Quantize to int8 with ONNX Runtime (checked against fp32 on real photos).")
    ] = False,
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            "-o",
            metavar="PATH",
            help="The .onnx file; default MODEL/model.onnx, or here catdog-builtin.onnx (catdog-builtin-large.onnx) "
            "for a built-in model; each ends -int8.onnx with --int8. With --format web, the folder; default MODEL/app, "
            "or catdog-app here for a built-in model.",
        ),
    ] = None,
    check_data: Annotated[
        str | None,
        typer.Option(
            metavar="DIR", help="Labelled photos (any dataset layout) for the parity check; default: the training data."
        ),
    ] = None,
    check_images: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="How many photos the export is checked on: 300 by default, and 2,000 for --int8's check (which "
            "needs at least 200).",
            min=8,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the parity report as JSON.")] = False,
) -> None:
    """Export a model to a self-contained ONNX file, refusing one that does not match PyTorch."""
    if fmt.lower() not in ("onnx", "web"):
        raise fail(f"Unknown format '{fmt}'; catdog exports 'onnx' or 'web'.")
    # Before the export: --json's report was lost after it (closed), and a full standard output failed after it.
    refuse_lost_output("the export's checks", "report.json" if as_json else "export.txt", also_in_files=not as_json)
    if fmt.lower() == "web":
        from catdog.webapp import write_web

        target = out or ("catdog-app" if builtin_name(model) else os.path.join(model, "app"))
        refuse_unwritable(target, "folder")
        config = write_web(model, target, int8=int8, check_dir=check_data, n_check=check_images)
        if as_json:
            print_json({"path": target, **{k: v for k, v in config.items() if k != "imagenet"}})
            return
        checked = f"; its model {_checks(config['check'])}" if "check" in config else ""
        from catdog.fsutil import printable

        size = f"model {config['model_bytes'] / 1e6:.1f} MB{checked}"
        where = "serve the folder over HTTPS from any static host (its _headers file lists the headers to send)"
        with printing():
            print(printable(f"Wrote the phone app to {target}/ ({size}): {where}."))
        return
    from catdog.export import export as run_export

    suffix = "model-int8.onnx" if int8 else "model.onnx"
    shipped = builtin_name(model)
    target = out or (os.path.join(model, suffix) if shipped is None else _shipped_exports(shipped)[int8])
    if target == "-":  # standard output to most tools; "must end in .onnx" read as if "-" were a file name
        raise fail("--out '-': catdog export writes a file, not standard output; give a file name ending in .onnx.")
    refuse_unwritable(target, "file")
    if not target.lower().endswith(".onnx"):
        # catdog predict, evaluate and serve take a file as a model only by this name; without it the file was
        # written (over whatever had the name: --out notes.txt) and then refused as "not a model directory".
        raise fail(f"--out '{target}' must end in .onnx: catdog reads a model file by that name.")
    report = run_export(model, target, int8=int8, check_dir=check_data, n_check=check_images)
    if as_json:
        print_json(report.to_dict())
        return
    from catdog.fsutil import shown

    with printing():
        Console(highlight=False, soft_wrap=True, emoji=False).print(
            shown(f"Wrote {report.path}: {_checks(report.to_dict())}.")
        )


def _checks(report: dict) -> str:
    """What an export was checked against, in words (the `--json` report's figures)."""
    from catdog.fsutil import counted

    line = f"max |Δprobability| vs PyTorch {report['fp32_max_gap']:.1e} on {counted(report['n_check'], 'photo')}"
    if report["int8"]:
        from catdog.export import (  # loaded already: it made the report
            INT8_CHECK_IMAGES,
            INT8_MAX_ACCURACY_DROP,
            INT8_MIN_AGREEMENT,
        )

        checked = report["n_check_int8"]
        calibration = counted(report["n_calibration"], "photo")
        line += f"; int8, calibrated on {calibration}, agrees with fp32 on {report['agreement']:.1%}"
        line += f" of {counted(checked, 'other')}"
        if report["accuracy_int8"] is not None:
            line += f", accuracy {report['accuracy_int8']:.1%} (fp32 {report['accuracy_fp32']:.1%})"
        if checked < INT8_CHECK_IMAGES:  # a pass on a few hundred photos is a narrow one: said, not left to infer
            flips = _fewest_over(checked, 1 - INT8_MIN_AGREEMENT)
            # With labels, the accuracy floor is the narrower one: on 200 photos, one mistake more is 0.5 points.
            mistakes = _fewest_over(checked, INT8_MAX_ACCURACY_DROP)
            more = "" if report["accuracy_int8"] is None else f", or {counted(mistakes, 'more mistake')} than fp32,"
            line += (
                f". That check rests on few photos: {counted(flips, 'changed label')}{more} would have failed it; "
                f"{INT8_CHECK_IMAGES:,} photos in --check-data make a firmer one"
            )
    return line


def _fewest_over(n: int, share: float) -> int:
    """The fewest of ``n`` photos that are more than ``share`` of them (1 of 200 is not more than 0.5 %, 2 are)."""
    return int(n * share + 1e-9) + 1  # 1e-9: n * share is a float a hair off a whole number
