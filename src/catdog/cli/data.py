"""``catdog data check`` and ``catdog data audit``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from catdog.cli.app import PlainHelp, app, data_app
from catdog.cli.errors import err_console, printing, refuse_unwritable, user_errors
from catdog.cli.output import print_json, refuse_lost_output

TOP_SUSPECTS = 20  # printed and shown by `catdog data audit` unless --top says otherwise


@data_app.command(
    "check", short_help="Find unusable, duplicate and odd files, label conflicts and images left out.", cls=PlainHelp
)
@user_errors
def data_check(
    folder: Annotated[
        str, typer.Argument(metavar="FOLDER", help="Dataset folder: cat.1.jpg-style files or one folder per class.")
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON document with every finding; default: a summary table.")
    ] = False,
    quarantine: Annotated[
        str | None,
        typer.Option(
            metavar="DIR",
            help="Move unusable files and the extra copies of duplicates and near-duplicates into this folder, "
            "keeping their relative paths (nothing is deleted; a photo found in several classes is moved in "
            "every copy). "
            "Default: only report.",
        ),
    ] = None,
    near_distance: Annotated[
        int,
        typer.Option(
            metavar="BITS", help="Near-duplicates: perceptual hashes at most this many bits apart (of 64).", min=0
        ),
    ] = 4,
    cache_dir: Annotated[
        str | None,
        typer.Option(
            metavar="DIR",
            help="Cache of per-file results; default $CATDOG_CACHE_DIR, else $XDG_CACHE_HOME/catdog or "
            "~/.cache/catdog.",
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(metavar="N", help="Threads reading images; default: one per CPU core.", min=1)
    ] = None,
) -> None:
    """Report unusable files, duplicates, label conflicts, wrong extensions and images left out (no label); note
    unusual modes, tiny images, small classes, blank images, panoramas and animated images (a model sees part of
    them) and files that are not images.

    Photos per class are counted; those of a `neither` folder (neither/, other/ ...) are counted apart,
    as examples of what is not a cat or a dog, not as a class to train.

    Exit status 1 when problems were found (notes aside), 0 when clean.
    """
    from rich.progress import Progress

    from catdog.data.check import check_dataset, summary

    refuse_lost_output("the findings", "report.json" if as_json else "report.txt")

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
        print_json(report.to_dict())
    else:
        out = Console(highlight=False, soft_wrap=True, emoji=False)
        with printing():
            for part in summary(report):
                out.print(part)
    raise typer.Exit(1 if report.problems else 0)


@data_app.command("audit", short_help="List the photos most likely mislabelled.", cls=PlainHelp)
@user_errors
def data_audit(
    data_dir: Annotated[str, typer.Argument(metavar="DATA_DIR", help="Labelled photos in any dataset layout.")],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Model directory, .onnx file or builtin-large giving the features; the built-in model if omitted.",
        ),
    ] = None,
    out: Annotated[
        str | None,
        typer.Option("--out", "-o", metavar="DIR", help="Write audit.html (thumbnails) and suspects.json here."),
    ] = None,
    folds: Annotated[int, typer.Option(metavar="N", help="Folds of the out-of-fold logistic regression.", min=2)] = 5,
    top: Annotated[
        int | None,
        typer.Option(
            metavar="N", help="How many suspects to print and show (default 20; with --json, every one).", min=1
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the suspects as JSON.")] = False,
) -> None:
    """List the photos most likely mislabelled: out-of-fold predictions that confidently disagree.

    Photos in a `neither` folder (neither/, other/ ...) are suspects when the model's gate sees a cat or a dog,
    and photos of cat/ or dog/ when it sees neither.
    """
    from catdog.audit import accuracy_note, audit, neither_note, pets_counted, suspects_note, write_audit
    from catdog.cli.output import print_unreadable
    from catdog.fsutil import percent, shown

    refuse_unwritable(out, "folder")
    # With --out the suspects are in its files too; only what is printed is lost to a closed standard output.
    refuse_lost_output(
        "the suspects", "suspects.json" if as_json else "suspects.txt", also_in_files=out is not None and not as_json
    )
    result = audit(data_dir, model, folds=folds)
    page = write_audit(result, out, top=top or TOP_SUSPECTS) if out else None  # suspects.json: every one
    if as_json:
        document = result.to_dict()
        document["suspects"] = document["suspects"][:top]  # [:None]: every one
        print_json(document)
        return
    top = top or TOP_SUSPECTS
    console = Console(highlight=False, soft_wrap=True, emoji=False)
    # Paths and class names are text, not rich markup: a '[/x]' in one raised MarkupError, and '[red]' vanished.
    with printing():
        console.print(shown(f"{pets_counted(result)}, {accuracy_note(result)}{neither_note(result, '; ')}."))
        console.print(shown(f"{suspects_note(result)}.") + _suspects_heading(len(result.suspects), top))
        for rank, s in enumerate(result.suspects[:top], 1):
            console.print(
                shown(f"{rank:3d}. {s.path}: labelled {s.label}, looks like {s.suggested} ({percent(s.confidence)})")
            )
        print_unreadable(console, result.unreadable, "left out of the audit")
        if page:
            console.print(shown(f"Report: {page}"))


def _suspects_heading(found: int, top: int) -> str:
    """What the list below the summary holds: with more suspects than --top, the line said "5 suspects ... Most
    likely mislabelled:" above 2 of them, and nothing that the other 3 were left out nor how to see them."""
    if not found:
        return ""
    if found <= top:
        return " Most likely mislabelled:"
    return f" Most likely mislabelled, the top {top} (--top {found} lists all):"


@app.command("cache", short_help="What catdog cached and its size; --clear frees it.", cls=PlainHelp)
@user_errors
def cache(
    clear: Annotated[
        bool,
        typer.Option(
            "--clear",
            help="Remove what catdog cached (decoded images, backbone features, ONNX exports of models, data check "
            "results, file hashes, generated test pictures); it is rebuilt when next needed. Not while a catdog "
            "command runs on this cache.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document; default: a table.")] = False,
    cache_dir: Annotated[
        str | None,
        typer.Option(
            metavar="DIR",
            help="The cache directory; default $CATDOG_CACHE_DIR, else $XDG_CACHE_HOME/catdog or ~/.cache/catdog.",
        ),
    ] = None,
) -> None:
    """Show what catdog keeps in its cache directory and how much room it takes, or clear it with --clear.

    Training caches each photo decoded at its input size (about 5 GB per size for 23,000 photos) and the
    backbone's features; prediction caches an ONNX export of each model it runs. All of it can go:
    catdog rebuilds what it needs.
    """

    from catdog.data.cache_dir import cache_contents, clear_cache
    from catdog.errors import CatdogError
    from catdog.fsutil import catdog_command, counted, default_cache_dir, shown

    # Before --clear clears: with standard output closed the listing of what went was lost, with exit status 0.
    refuse_lost_output("the cache's contents", "cache.json" if as_json else "cache.txt")
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    if root.exists() and not root.is_dir():
        raise CatdogError(f"The cache directory '{root}' is a file, not a folder.")
    if clear:
        (parts, kept), others = clear_cache(root), []
    else:
        contents = cache_contents(root)  # one walk gives the listing and what is not catdog's
        parts, kept, others = contents.parts, 0, contents.other_files
    total = sum(p.size_bytes for p in parts)
    if as_json:
        parts_dicts = [p.to_dict() for p in parts]
        document = {"cache_dir": str(root), "cleared": clear, "size_bytes": total, "parts": parts_dicts}
        print_json(document | ({"other_files_kept": kept} if clear else {"other_files": others}))
        return
    say = printing()(Console(highlight=False, soft_wrap=True, emoji=False).print)
    if clear:
        were, stay = ("was", "stays") if kept == 1 else ("were", "stay")
        stays = f"; {counted(kept, 'other file')} in its folders {were} not catdog's and {stay}" if kept else ""
        freed = f"{_size(total)} freed ({counted(len(parts), 'item')})"
        say(f"Cleared catdog's cache in {shown(str(root))}: {freed}{stays}.")
        return
    if not parts:  # "0 B in 0 items" said nothing of a folder that does not exist, or holds someone else's files
        say(f"catdog's cache: {shown(str(root))} {_holds_nothing_of_catdog_s(root, others)}.")
        return
    items = counted(len(parts), "item")  # "1 items" once, beside the "1 other file" it says right
    # With the --cache-dir it was given: without it, the command pasted cleared the default cache instead.
    clear_it = catdog_command("cache", "--clear", *(("--cache-dir", Path(cache_dir)) if cache_dir else ()))
    clear_it = clear_it or "catdog cache --clear with that --cache-dir"
    say(f"catdog's cache: {shown(str(root))}, {_size(total)} in {items} ({shown(clear_it)} frees it all)")
    for part in sorted(parts, key=lambda p: -p.size_bytes):
        say(f"  {_size(part.size_bytes):>9}  {shown(part.path)}  [dim]{part.holds}[/]")
    if others:
        say(f"  [dim]and {_not_catdog_s(others)}: --clear leaves {'it' if len(others) == 1 else 'them'}[/]")


def _holds_nothing_of_catdog_s(root: Path, others: list[str]) -> str:
    """How a cache with nothing of catdog's in it reads: "does not exist yet", "is empty", or what it holds."""
    if not root.exists():
        return "does not exist yet: nothing is cached (catdog makes it when it first caches something)"
    if not others:
        return "is empty: nothing is cached"
    return f"holds nothing catdog cached, only {_not_catdog_s(others)}"


def _not_catdog_s(others: list[str]) -> str:
    """ "1 file or folder that is not catdog's ('notes.txt')", naming the first three (four, rather than "1 more")."""
    from catdog.fsutil import first_few, shown

    names = first_few([f"'{shown(name)}'" for name in others], 3)
    if len(others) == 1:
        return f"1 file or folder that is not catdog's ({names[0]})"
    return f"{len(others):,} files or folders that are not catdog's ({', '.join(names)})"


def _size(size_bytes: int) -> str:
    """``5.0 GB``, ``340.2 MB``: decimal units, as ``du --si`` and file managers show them."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size_bytes >= scale:
            return f"{size_bytes / scale:.1f} {unit}"
    return f"{size_bytes} B"
