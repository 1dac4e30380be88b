"""How results are printed: predictions as text, JSON or CSV (streamed), and the evaluation summary."""

from __future__ import annotations

import csv
import math
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from catdog.cli.errors import fail, printing
from catdog.fsutil import catdog_command, counted, json_text, percent, shown, utf8_safe

if TYPE_CHECKING:
    from catdog.inference.predictor import Prediction


def refuse_lost_output(results: str, example: str, *, also_in_files: bool = False) -> None:
    """Refuse, before any work, to print ``results`` ("the answers") where they would be lost: with standard output
    closed (``>&-``) Python drops every print, and a command's results were lost with exit status 0; open for
    reading only (``1<file``) or full (``> /dev/full``), the first write ended the run with "[Errno 9] Bad file
    descriptor" or "[Errno 28] No space left on device". ``example``: a file to print them to instead.

    ``also_in_files``: text output of a command that writes its results to files too (predict --sort-into's copies,
    evaluate's and audit's --out), which rich drops quietly where standard output is closed: only a copy is lost."""
    if sys.stdout is None:
        if also_in_files:
            return
        raise fail(f"Standard output is closed, so {results} would be lost: print them somewhere (> {example}).")
    try:
        descriptor = sys.stdout.fileno()
    except (OSError, ValueError):  # not a file at all (a caller's own stream): its writes are its own
        return
    try:
        os.write(descriptor, b"")  # writes nothing, but a descriptor open for reading only, or /dev/full, refuses it
    except OSError as err:
        raise fail(
            f"Standard output cannot be written ({err.strerror}), so {results} would be lost: print them somewhere "
            f"(> {example})."
        ) from None


def print_json(document: object) -> None:
    """Print ``document`` as a command's --json output: a name that is not UTF-8 as ``\\xe9`` (:func:`json_text`).

    A command that did not refuse a closed standard output before its work meets it here, in the same sentence:
    writing to the stream Python does not have was "unexpected AttributeError", status 70."""
    if sys.stdout is None:
        refuse_lost_output("the results", "report.json")
    with printing():
        sys.stdout.write(json_text(document) + "\n")


@dataclass
class Printed:
    """What :func:`print_predictions` has printed so far: read after a Ctrl-C too, to say how far a batch got."""

    answers: int = 0
    failed: bool = False  # any of them an error line


def print_predictions(results: Iterable, classes: list[str], printed: Printed, *, as_json: bool, as_csv: bool) -> None:
    """Print each prediction as soon as it is known (a long job shows its progress), counting them in ``printed``.

    A name that is not UTF-8 is written with its bad bytes as ``\\xe9`` in every format (:func:`utf8_safe`). A
    Ctrl-C closes the --json list before it goes on: cut off after its last element, the output was not JSON."""
    if as_json:
        _print_json_list(results, printed)
        return
    if as_csv:
        writerow = printing()(csv.writer(sys.stdout, lineterminator="\n").writerow)
        # looks_like after error: a reader that takes the older columns by position keeps working.
        writerow(["path", "label", "confidence", *classes, "error", "looks_like", "looks_like_means"])
        for r in results:
            _count(printed, r)
            probs = r.probabilities or {}
            writerow(
                [
                    utf8_safe(r.source),
                    r.label or "",
                    r.confidence if r.confidence is not None else "",
                    *[probs.get(c, "") for c in classes],
                    utf8_safe(r.error or ""),
                    r.looks_like or "",
                    r.looks_like_means or "",
                ]
            )
        return
    say = printing()(Console(highlight=False, soft_wrap=True, emoji=False).print)
    for r in results:
        _count(printed, r)
        if r.ok:
            colour = {"cat": "magenta", "dog": "cyan"}.get(r.label or "", "yellow")
            say(f"{shown(r.source)}: [bold {colour}]{r.label}[/] ({_confidence(r)}){_seen(r)}")
        else:
            say(f"{shown(r.source)}: [red]error[/] {shown(r.error)}")


def _print_json_list(results: Iterable, printed: Printed) -> None:
    """The same text as json.dump(list, indent=2), one element at a time; the list closed on a Ctrl-C too."""
    write = printing()(sys.stdout.write)  # each write, not the results' work, says a failing standard output
    write("[")
    cut_off: KeyboardInterrupt | None = None
    try:
        for r in results:
            element = json_text(r.to_dict()).replace("\n", "\n  ")
            _count(printed, r)
            write(("," if printed.answers > 1 else "") + "\n  " + element)
    except KeyboardInterrupt as interrupt:
        cut_off = interrupt  # raised again once the list is closed
    write("\n]\n" if printed.answers else "]\n")
    if cut_off is not None:
        raise cut_off


def _count(printed: Printed, r: Prediction) -> None:
    """Called just before an answer is printed, not after: a Ctrl-C or SIGTERM sent by whoever reads the output
    comes as the answer's write wakes the reader, before the next line, and found it printed but not counted
    (said "2 of 300" with 3 answers out)."""
    printed.answers += 1
    printed.failed |= not r.ok


def _seen(r: Prediction) -> str:
    """What a `neither` answer sees: no cat or dog, and what the photo looks like where the backbone sees it
    clearly enough to name it (``looks_like``)."""
    if r.looks_like:
        return f" [dim]no cat or dog; looks like: {r.looks_like} ({r.looks_like_means})[/]"
    return " [dim]no cat or dog[/]" if r.label == "neither" else ""


@printing()
def print_evaluation(result: dict) -> None:
    from rich.table import Table

    out = Console(highlight=False, soft_wrap=True, emoji=False)
    part = "" if result.get("split", "all") == "all" else f" of its {result['split']} split"
    table = Table(title=shown(f"{result['model']} on {counted(result['n'], 'photo')}{part}"))
    for column in ("class", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="right")
    for c in result["classes"]:
        table.add_row(
            shown(c), *(f"{result[k][c]:.4f}" for k in ("precision", "recall", "f1")), str(result["support"][c])
        )
    out.print(table)
    auc = "n/a" if result["roc_auc"] is None else f"{result['roc_auc']:.4f}"
    low, high = result["accuracy_interval"]
    out.print(
        f"accuracy {percent(result['accuracy'])} (95% interval {percent(low)}–{percent(high)})  "
        f"log loss {result['log_loss']:.4f}  "
        f"ROC AUC {auc}  ECE {result['ece']:.4f}"
    )
    # Said in a few words here, in a sentence each in report.html and docs/training.md.
    out.print(
        "[dim](log loss: the mean of −ln P(true class), 0 at best; ROC AUC: how often a photo of a class gets a "
        "higher P(that class) than a photo of another, 1 at best, 0.5 by guessing; ECE: the mean gap between "
        "confidence and accuracy, 0 at best)[/]"
    )
    if result["neither"] or result["unsure"]:
        neither, unsure = counted(result["neither"], "time"), counted(result["unsure"], "time")
        out.print(f"answered 'neither' {neither} and 'unsure' {unsure} (counted wrong)")
    if "open_set" in result:
        o = result["open_set"]
        neither_photos = counted(o["n_neither"], "'neither' photo")
        if not o["gate"]:  # no gate, no pets to tell apart: a horse/cow model read "pets versus neither (73 pets"
            out.print(f"{neither_photos}, not counted above. {o['note']}")
        else:
            out.print(f"pets versus neither ({counted(o['n_pets'], 'pet')}, {neither_photos}, not counted above):")

            from catdog.report import open_set_value

            def figure(key: str) -> str:
                return open_set_value(o, key, lambda value: "n/a" if value is None else f"{value:.4f}")

            out.print(
                f"  ROC AUC {figure('roc_auc')}  neither answered 'neither' {figure('neither_answered')}  "
                f"pets turned away {figure('pets_turned_away')}  (threshold {o['threshold']:.4g})"
            )
            out.print(
                f"  FPR at 95% TPR {figure('fpr_at_95_tpr')} (neither photos scoring at least "
                f"{figure('score_at_95_tpr')}, the P(cat or dog) that keeps 95% of pets)"
            )
    print_unreadable(out, result["unreadable"])
    if result.get("left_out"):
        left_out = result["left_out"]
        list_them = catdog_command("data", "check", Path(result["data"])) or "catdog data check on that folder"
        out.print(
            f"[yellow]{counted(len(left_out), 'image file')} left out[/]: the folder's layout gives no "
            "label, e.g. "
            f"'{shown(left_out[0])}'; to list them: {shown(list_them)}"
        )
    if "robustness" in result:
        from catdog.report import robustness_cell

        r = result["robustness"]
        clean = robustness_cell(r["clean"], r["clean_neither"])
        table = Table(title=f"accuracy under corruptions ({counted(r['n'], 'photo')}, clean {clean})")
        for column in ("corruption", "severity 1", "2", "3"):
            table.add_column(column, justify="right")
        for name, values in r["accuracy"].items():
            table.add_row(name, *(robustness_cell(v, n) for v, n in zip(values, r["neither"][name])))
        out.print(table)
    if "report" in result:
        out.print(shown(f"Report: {result['report']}"))


def print_unreadable(out: Console, unreadable: list[dict], fate: str = "") -> None:
    """The files that could not be read, under a count, each in the one sentence catdog.images gives (the same as
    data check's for that file): "unreadable '…' is empty (0 bytes)." read awkwardly."""
    if unreadable:
        out.print(f"[yellow]{counted(len(unreadable), 'unreadable file')}[/]{', ' + fate if fate else ''}:")
        for item in unreadable:
            out.print(f"  {shown(item['error'])}")


def _confidence(r: Prediction) -> str:
    """The confidence as a person reads it. An answer a threshold made ('unsure', or 'neither' under a strict
    --neither-threshold) gets the digits that show why: "unsure (100.0%)" once hid 99.977 % < 99.999 %."""
    if r.label == "unsure":
        best = max((c for c in r.probabilities or {} if c != "neither"), key=r.probabilities.__getitem__)
        return f"best: {best} {percent(r.probabilities[best])}"
    if r.label == "neither" and r.confidence < 0.5:  # a strict --neither-threshold: "neither (0.0%)" otherwise
        return percent(r.confidence)
    return f"{r.confidence:.1%}"


def percents(probabilities: dict[str, float]) -> str:
    """``probabilities`` as "cat 82.5%, dog 17.5%, neither 0.0%": one decimal each, adding up to exactly 100 %.

    Largest remainder, as the page and the app do (shares.js, ``catdogShares.percents``): each rounded on its own,
    three of them once read 99.9 % or 100.1 % in all."""
    total = sum(probabilities.values())
    tenths = {name: p / total * 1000 for name, p in probabilities.items()} if total > 0 else {}
    shares = {name: math.floor(t) for name, t in tenths.items()}
    left = 1000 - sum(shares.values()) if tenths else 0
    for name in sorted(tenths, key=lambda n: tenths[n] - shares[n], reverse=True)[:left]:
        shares[name] += 1
    return ", ".join(f"{name} {n / 10:.1f}%" for name, n in shares.items())
