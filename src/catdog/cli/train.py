"""``catdog train`` and ``catdog soup``."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from catdog.cli.app import PlainHelp, app
from catdog.cli.errors import LOST_PEER, fail, lost_peer, printing, stopping_on_signals, user_errors


@app.command(short_help="Train a model on a dataset folder (CPU, GPU or torchrun).", cls=PlainHelp)
@user_errors
def train(
    data_dir: Annotated[
        str, typer.Argument(metavar="DATA_DIR", help="Dataset folder: cat.1.jpg-style files, or one folder per class.")
    ],
    out: Annotated[str, typer.Option("--out", "-o", metavar="DIR", help="Model directory to write.")],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            metavar="ARCH",
            help="Architecture to train: seed-cnn, catnet, or a timm backbone (e.g. tf_efficientnet_lite0).",
        ),
    ] = "catnet",
    freeze: Annotated[
        str,
        typer.Option(
            metavar="MODE",
            help="'none': all layers train; 'backbone': only a new head, on cached backbone features; "
            "'stages:N': the stem and first N stages frozen, the later ones fine-tune on their cached output.",
        ),
    ] = "none",
    epochs: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="Epochs; default 30 from scratch, 10 fine-tuning, 40 for a frozen head, and with a --time-budget as "
            "many as it allows (at most --epochs, if given).",
            min=1,
        ),
    ] = None,
    time_budget: Annotated[
        float | None,
        typer.Option(
            metavar="MINUTES",
            help="Minutes for the whole run (decoding, features, training, final evaluation).",
            min=0.01,
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="Global batch size; default 64 from scratch or with stages:N, 32 fine-tuning, 256 head.",
            min=1,
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            help="Peak learning rate; default 3e-3 from scratch (1e-3 for seed-cnn), 5e-4 fine-tuning or with "
            "stages:N, 1e-3 head.",
            min=0,
        ),
    ] = None,
    optimizer: Annotated[str | None, typer.Option(help="adamw or adam; default adamw (adam for seed-cnn).")] = None,
    weight_decay: Annotated[
        float | None,
        typer.Option(
            metavar="DECAY",
            help="Weight decay; default 0.05 from scratch (0 for seed-cnn), 0.02 fine-tuning or with stages:N, "
            "1e-3 head.",
            min=0,
        ),
    ] = None,
    layer_decay: Annotated[
        float | None,
        typer.Option(
            metavar="FACTOR",
            help="Fine-tuning: learning-rate factor per earlier block; default 0.7 (0.8 with stages:N).",
            min=0,
            max=1,
        ),
    ] = None,
    schedule: Annotated[str, typer.Option(help="cosine (with warm-up) or onecycle.")] = "cosine",
    warmup_epochs: Annotated[
        float,
        typer.Option(
            metavar="EPOCHS",
            help="Linear warm-up length in epochs (cosine); under --time-budget, at most a twentieth of the budget.",
            min=0,
        ),
    ] = 1.0,
    label_smoothing: Annotated[
        float | None,
        typer.Option(
            metavar="AMOUNT", help="Label smoothing of the loss; default 0.1 (0 for seed-cnn).", min=0, max=0.5
        ),
    ] = None,
    mixup: Annotated[float, typer.Option(metavar="ALPHA", help="MixUp alpha (0 = off).", min=0)] = 0.0,
    cutmix: Annotated[float, typer.Option(metavar="ALPHA", help="CutMix alpha (0 = off).", min=0)] = 0.0,
    ema: Annotated[
        float,
        typer.Option(
            metavar="DECAY",
            help="Keep, validate and save a moving average of the weights with this decay per step (e.g. 0.999; "
            "0 = off).",
            min=0,
        ),
    ] = 0.0,
    drop_path: Annotated[
        float,
        typer.Option(
            metavar="RATE", help="Fine-tuning: stochastic depth rate of the backbone (e.g. 0.1).", min=0, max=0.9
        ),
    ] = 0.0,
    image_size: Annotated[
        # No typer minimum: the model's own (46 for seed-cnn) is said in one sentence by TrainConfig.
        int | None,
        typer.Option(metavar="PIXELS", help="Input side in pixels; default 128 from scratch, else the backbone's own."),
    ] = None,
    test_image_size: Annotated[
        int | None,
        typer.Option(
            metavar="PIXELS",
            help="Validate the final model, and predict, at this side (e.g. 288 for a 224 backbone: nets trained "
            "on random crops do better a little larger); default: the input side.",
        ),
    ] = None,
    feature_views: Annotated[
        int,
        typer.Option(
            metavar="N",
            help="--freeze backbone or stages:N: views cached per training image (1, 2 + mirror, more augmented).",
            min=1,
        ),
    ] = 2,
    val_fraction: Annotated[
        float, typer.Option(metavar="FRACTION", help="Share of images held out for validation.", min=0.01, max=0.9)
    ] = 0.1,
    test_fraction: Annotated[
        float,
        typer.Option(
            metavar="FRACTION",
            help="Share of images held out for a final test no training choice sees "
            "(catdog evaluate MODEL DATA_DIR --split test); 0: none.",
            min=0,
            max=0.5,
        ),
    ] = 0.0,
    patience: Annotated[
        int | None,
        typer.Option(
            metavar="EPOCHS",
            help="Stop after this many epochs without a better calibrated validation loss "
            "(default: 8 from scratch or for a head, 4 fine-tuning).",
            min=1,
        ),
    ] = None,
    seed: Annotated[int, typer.Option(metavar="N", help="Random seed.")] = 0,
    deterministic: Annotated[
        bool,
        typer.Option(
            "--deterministic",
            help="Deterministic algorithms: exactly reproducible with --epochs, slower. "
            "Under --time-budget the schedule follows the clock.",
        ),
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
            metavar="N",
            help="Processes that decode photos (validation at --test-image-size, or a data set too big for the "
            "GPU); default one (GPU: one per core). Training images come from the pixel cache without them.",
            min=0,
        ),
    ] = None,
    cache_dir: Annotated[
        str | None,
        typer.Option(
            metavar="DIR",
            help="Cache of decoded images and features; default $CATDOG_CACHE_DIR, else $XDG_CACHE_HOME/catdog"
            " or ~/.cache/catdog.",
        ),
    ] = None,
    checkpoint_seconds: Annotated[
        float,
        typer.Option(metavar="SECONDS", help="Checkpoint this often (and after every epoch); 0: every step.", min=0),
    ] = 60.0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the unfinished run in --out.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a model already in --out.")] = False,
) -> None:
    """Train a classifier on a dataset folder and write a model directory."""
    options = dict(locals())  # every parameter above is a TrainConfig field of the same name
    started = time.monotonic()  # the time budget includes importing torch and timm
    from catdog.models.files import CHECKPOINT

    stops: list[int] = []  # SIGINT or SIGTERM, once one has come
    # A resumed run was once told to "add --resume" to a command that had it.
    go_on = "run the same command again" if resume else "add --resume to the same command"
    kept = f"'{out}' keeps the run: {go_on} to go on."
    try:
        with stopping_on_signals(stops):
            # Imported here: a Ctrl-C in the seconds torch takes to import once said a bare "Interrupted.".
            # numpy first: torch's C extension imports it and swallows what goes wrong there, so a Ctrl-C landing
            # in numpy's import was lost (the run went on) or came out as a RecursionError.
            import numpy  # noqa: F401

            from catdog.training.config import TrainConfig

            config = TrainConfig(**options).resolved()  # a bad option is refused before importing timm and torchvision
            from catdog.training.recipe import train as run_training

            run_training(config, started=started)
    except (KeyboardInterrupt, RuntimeError) as err:
        # Under torchrun rank 0 may meet the other ranks, stopped too, leaving its collective before its own signal.
        stopped = isinstance(err, KeyboardInterrupt) or (bool(stops) and lost_peer(err))
        if not (stopped or lost_peer(err)):
            raise
        checkpointed = (Path(out) / CHECKPOINT).exists()
        if not (stopped or checkpointed):
            raise
        if not stopped:
            raise fail(f"{LOST_PEER}. {kept}", 1) from None
        if not checkpointed:  # a bare "Interrupted." left a newcomer looking for a run to --resume
            kept = (
                "no checkpoint had been written yet, so nothing of this run is kept: "
                "run the same command again to start over."
            )
        if stops and stops[0] == signal.SIGTERM:
            raise fail(f"Stopped by SIGTERM; {kept}", 128 + signal.SIGTERM) from None
        raise fail(f"Interrupted; {kept}", 130) from None


@app.command(short_help="Average models fine-tuned from the same weights: a model soup.", cls=PlainHelp)
@user_errors
def soup(
    models: Annotated[
        list[str], typer.Argument(metavar="MODELS", help="Two or more model directories of one recipe (other seeds).")
    ],
    data_dir: Annotated[
        str,
        typer.Option(
            "--data", "-d", metavar="DIR", help="The dataset folder they were trained on (its validation split)."
        ),
    ],
    out: Annotated[str, typer.Option("--out", "-o", metavar="DIR", help="Model directory to write.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a model already in --out.")] = False,
    batch_size: Annotated[
        int, typer.Option(metavar="N", help="Images per forward pass on the validation photos.", min=1)
    ] = 32,
    as_json: Annotated[bool, typer.Option("--json", help="Print the validation figures as JSON.")] = False,
) -> None:
    """Average the weights of models fine-tuned from the same pretrained weights: one model, often more
    accurate than each, at one model's cost. Its temperature is fitted on the members' validation split,
    where it is measured beside each member."""
    from catdog.cli.output import print_json, refuse_lost_output
    from catdog.soup import SoupConfig, summary
    from catdog.soup import soup as make_soup

    # Before the soup is made: --json's figures were lost after it (closed), and a full standard output failed after it.
    refuse_lost_output("the validation figures", "soup.json" if as_json else "soup.txt", also_in_files=not as_json)
    config = SoupConfig(models=models, data_dir=data_dir, out=out, overwrite=overwrite, batch_size=batch_size)
    metrics = make_soup(config)
    if as_json:
        print_json({"out": config.out, **metrics})
    else:
        with printing():
            print(summary(config, metrics))
