"""The evaluation report: PNG plots, a gallery of confident mistakes, one self-contained report.html."""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn import metrics as skm  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402

from catdog.data.layout import NEITHER  # noqa: E402
from catdog.fsutil import (  # noqa: E402
    atomic_write_bytes,
    atomic_write_text,
    counted,
    html_text,
    json_text,
    percent,
    printable,
    utf8_safe,
)
from catdog.images import ImageError, decode  # noqa: E402

GALLERY_SIZE = 16
THUMB = 200

# What the three figures a learner may not know mean, said where the report shows them (and in docs/training.md).
LOG_LOSS_MEANS = (
    "Log loss is the mean, over the photos, of −ln of the probability the model gave the true class: 0 if it gave "
    "every true class a probability of 1, 0.693 if it always said 50/50 between two classes, and a confident "
    "mistake costs the most."
)
ROC_AUC_MEANS = (
    "ROC AUC (the area under the ROC curve) is the chance that a photo of a class, picked at random, gets a higher "
    "probability of that class than a photo of another class does: 1 when the probabilities rank every photo of "
    "each class first, 0.5 for guessing, whatever threshold would turn them into answers (with more than two "
    "classes, the mean over the classes of each against the rest)."
)
ECE_MEANS = (
    "ECE (expected calibration error) sorts the photos into bins by the model's confidence (its highest class "
    "probability) and averages the gap between each bin's mean confidence and its accuracy, weighted by the "
    "bin's photos: 0 when the photos it is 90% sure of are right 90% of the time."
)
# The look of report.html and of audit.html (a suspect is its card), in light and dark.
PAGE_STYLE = """
:root { color-scheme: light; }
/* break-word, not anywhere: a long file name breaks, while the tables keep their numbers whole (and scroll). */
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; background: #fff; overflow-wrap: break-word; }
a { color: #0645ad; }
@media (max-width: 600px) { body { margin: 1rem; } }
p { max-width: 60rem; }  /* lines a reader can follow on a wide screen */
/* The scrolling is the wrapper's: a table styled display: block stops being a table to a screen reader. */
.scroll { max-width: 100%; overflow-x: auto; margin: 1rem 0; }
table { border-collapse: collapse; }
td, th { border: 1px solid #ccc; padding: .3rem .6rem; text-align: right; }
/* A cell is never broken over lines ("0.875 (12% neither)" took three on a phone): the table scrolls. */
td { white-space: nowrap; }
figure { display: inline-block; margin: .5rem; vertical-align: top; }
figure.mistake, figure.suspect { width: 210px; font-size: .8rem; }
img { max-width: 100%; height: auto; }
/* The plots are drawn on white: a white card around them keeps their black text readable on a dark page. */
img.plot { box-sizing: border-box; background: #fff; padding: .4rem; border-radius: 4px; }
/* On screen only: a browser printing in a dark scheme would put light text on white paper. */
@media screen and (prefers-color-scheme: dark) {
  :root { color-scheme: dark; }
  body { color: #e8e8e8; background: #161616; }
  td, th { border-color: #555; }
  a { color: #8ab4f8; }
}
"""


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def confusion_png(metrics: dict) -> bytes:
    matrix = np.array(metrics["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * matrix.shape[1], 1.4 + 1.1 * matrix.shape[0]))
    # Drawn directly: with 'neither'/'unsure' columns the matrix is not square (ConfusionMatrixDisplay needs square).
    ax.imshow(matrix, cmap="Blues")
    for (row, col), value in np.ndenumerate(matrix):
        colour = "white" if value > matrix.max() / 2 else "black"
        ax.text(col, row, str(value), ha="center", va="center", color=colour)
    ax.set_xticks(range(matrix.shape[1]), metrics["confusion_columns"])
    ax.set_yticks(range(matrix.shape[0]), metrics["classes"])
    ax.set_xlabel("answer")
    ax.set_ylabel("truth")
    ax.set_title("Confusion matrix (rows: truth)")
    return _png(fig)


def roc_png(evaluation, metrics: dict) -> bytes:
    fig, ax = plt.subplots(figsize=(5, 4.5))
    y = evaluation.y
    for i, name in enumerate(evaluation.classes):
        if len(evaluation.classes) == 2 and i == 0:
            continue  # one curve says it all for two classes
        if 0 < (y == i).sum() < len(y):
            skm.RocCurveDisplay.from_predictions(y == i, evaluation.probs[:, i], name=name, ax=ax)
    ax.plot([0, 1], [0, 1], "k:", linewidth=1)
    positive = evaluation.classes[1] if len(evaluation.classes) == 2 else "each class"
    ax.set_xlabel("false positive rate"), ax.set_ylabel(f"true positive rate ({positive})")
    auc = metrics.get("roc_auc")
    title = ", ".join(evaluation.classes) + " (photos of these classes only)"
    ax.set_title(f"ROC of {title}\nAUC {auc:.4f}" if auc is not None else f"ROC of {title}", fontsize=10)
    return _png(fig)


def reliability_png(evaluation, metrics: dict) -> bytes:
    confidence = evaluation.probs.max(axis=1)
    correct = (evaluation.probs.argmax(axis=1) == evaluation.y).astype(int)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    if len(set(correct.tolist())) > 1:
        accuracy, mean_conf = calibration_curve(correct, confidence, n_bins=10, strategy="quantile")
        ax.plot(mean_conf, accuracy, "o-", label="model")
    ax.plot([0, 1], [0, 1], "k:", linewidth=1, label="perfect calibration")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability (ECE {metrics['ece']:.4f})")
    ax.legend(loc="upper left")
    return _png(fig)


def robustness_cell(accuracy: float, neither: float) -> str:
    """ "0.850", or "0.850 (12% neither)" where the gate turned some of the corrupted pets away."""
    if not neither:
        return f"{accuracy:.3f}"
    # 1 of 300 read "(0% neither)" and 299 "(100% neither)" beside an accuracy above 0: never round to either end.
    share = f"{neither:.0%}"
    share = "<1%" if share == "0%" else ">99%" if share == "100%" and neither < 1 else share
    return f"{accuracy:.3f} ({share} neither)"


def robustness_png(robust: dict) -> bytes:
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, values in robust["accuracy"].items():
        ax.plot([0, 1, 2, 3], [robust["clean"], *values], "o-", label=name)
    ax.set_xticks([0, 1, 2, 3], ["clean", "1", "2", "3"])
    ax.set_xlabel("severity")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Accuracy under corruptions ({counted(robust['n'], 'photo')})")
    ax.legend(fontsize=8, ncol=2)
    return _png(fig)


def open_set_png(evaluation, open_set: dict) -> bytes:
    """Histograms of the gate's P(cat or dog) for pet photos and `neither` photos, the threshold marked."""
    return _png(open_set_figure(evaluation, open_set))


def open_set_figure(evaluation, open_set: dict) -> Figure:
    """The figure of :func:`open_set_png`, open (a test measures where its legend lies)."""
    scores = evaluation.pet_score
    neither = evaluation.is_neither
    bins = np.linspace(0.0, 1.0, 41)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for mask, name, colour in ((~neither, "cat or dog", "tab:blue"), (neither, "neither", "tab:orange")):
        if mask.any():
            ax.hist(
                scores[mask], bins=bins, weights=np.full(mask.sum(), 1 / mask.sum()), alpha=0.55, color=colour,
                label=f"{name} ({counted(int(mask.sum()), 'photo')})",
            )  # fmt: skip
    ax.axvline(open_set["threshold"], color="k", linestyle="--", label=f"threshold {open_set['threshold']:.3g}")
    if open_set.get("score_at_95_tpr") is not None:
        ax.axvline(open_set["score_at_95_tpr"], color="grey", linestyle=":", label="95% of pets kept")
    ax.set_yscale("log")  # the tails (a non-pet that scores high, a pet that scores low) are what matter
    ax.set_ylim(0.5 / max(1, len(scores)), 1.5)  # a share is at most 1
    ax.set_xlim(0, 1)
    ax.set_xlabel("P(cat or dog)")
    ax.set_ylabel("share of the group's photos")
    auc = open_set.get("roc_auc")
    ax.set_title(f"Pets versus neither (ROC AUC {auc:.4f})" if auc is not None else "Pets versus neither")
    # Below the axes: inside, "upper center" sat on the threshold line at 0.5 and any bar near it.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8, frameon=False)
    return fig


def confident_mistakes(evaluation, k: int = GALLERY_SIZE) -> list[dict]:
    """The ``k`` wrong answers with the highest probability on the wrong class, most confident first."""
    wrong = []
    for i, (truth, answer) in enumerate(zip(evaluation.truth, evaluation.predicted)):
        if answer != truth:
            probs = dict(zip(evaluation.classes, evaluation.probs[i].round(4).tolist()))
            item = {"path": evaluation.paths[i], "truth": truth, "answer": answer, "probabilities": probs}
            if evaluation.pet_score is not None:  # a gated model: its class probabilities are P(class | a pet)
                item["pet_score"] = round(float(evaluation.pet_score[i]), 4)
            wrong.append(item)
    wrong.sort(key=lambda w: -max(p for c, p in w["probabilities"].items() if c != w["truth"]))
    return wrong[:k]


def mistake_probabilities(item: dict, digits: int) -> str:
    """A mistake's probabilities as the metrics use them; for a gated model, with the gate's P(cat or dog) first.

    The class probabilities of a gated model are P(class | a cat or dog): `catdog predict` shows them times
    P(cat or dog) beside P(neither), so without it a pet turned away read "cat 0.99" and answered neither.
    """
    probs = ", ".join(f"{c} {p:.{digits}f}" for c, p in item["probabilities"].items())
    if "pet_score" not in item:
        return probs
    return f"P(cat or dog) {item['pet_score']:.{digits}f}\ngiven a cat or dog: {probs}"


def let_through(evaluation, k: int = GALLERY_SIZE) -> list[dict]:
    """The ``k`` `neither` photos answered as a class of the model, the highest P(cat or dog) first."""
    if evaluation.pet_score is None:
        return []
    found = [
        {"path": path, "answer": answer, "pet_score": float(score)}
        for path, truth, answer, score in zip(
            evaluation.paths, evaluation.truth, evaluation.predicted, evaluation.pet_score
        )
        if truth == NEITHER and answer in evaluation.classes  # not `neither`, nor `unsure`
    ]
    return sorted(found, key=lambda item: -item["pet_score"])[:k]


def thumbnail_data_uri(path: str, size: int = THUMB) -> str | None:
    try:
        img = decode(path, min_size=size)
    except ImageError:
        return None
    img.thumbnail((size, size))
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def gallery_png(mistakes: list[dict]) -> bytes:
    cols = 4
    rows = max(1, (len(mistakes) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, item in zip(axes.flat, mistakes):
        try:
            img = decode(item["path"], min_size=THUMB)
            img.thumbnail((THUMB, THUMB))
            ax.imshow(img)
        except ImageError:
            pass
        probs = mistake_probabilities(item, 2)
        ax.set_title(
            f"{printable(Path(item['path']).name)}\ntrue {item['truth']} → {item['answer']}\n{probs}", fontsize=8
        )
    if not mistakes:
        axes[0, 0].text(0.5, 0.5, "no mistakes", ha="center")
    return _png(fig)


def _uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


# What each plot shows, for a screen reader: its file name alone ("roc.png") said nothing.
PLOT_ALT = {
    "confusion_matrix.png": "Confusion matrix: how many photos of each class (rows) got each answer (columns)",
    "roc.png": "ROC curve: true positive rate against false positive rate",
    "reliability.png": "Reliability diagram: accuracy against the model's confidence",
    "robustness.png": "Accuracy under each corruption, clean and at severities 1 to 3",
    "open_set.png": "Histograms of P(cat or dog) for the pet photos and the neither photos, the threshold marked",
}


def _plot(name: str, png: bytes) -> str:
    """A plot on its white card, captioned with the name of its file beside report.html."""
    alt = html.escape(PLOT_ALT[name])
    return f'<figure><img class="plot" src="{_uri(png)}" alt="{alt}"><figcaption>{name}</figcaption></figure>'


def scrolling_table(rows: str, label: str) -> str:
    """A table that scrolls sideways inside a named region on a narrow screen, and stays a table to a screen reader."""
    return (
        f'<div class="scroll" role="region" aria-label="{html.escape(label)}" tabindex="0"><table>{rows}</table></div>'
    )


def _fmt(value) -> str:
    if isinstance(value, list):  # an interval
        return "–".join(_fmt(end) for end in value)
    return "—" if value is None else f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))


def write_report(out_dir: str | os.PathLike, evaluation, metrics: dict) -> Path:
    """Write the PNGs, metrics.json and report.html into ``out_dir``; return the HTML path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pets = evaluation.pets()  # the plain plots are on the photos of the model's classes
    mistakes = confident_mistakes(pets)
    pngs = {
        "confusion_matrix.png": confusion_png(metrics),
        "roc.png": roc_png(pets, metrics),
        "reliability.png": reliability_png(pets, metrics),
        "mistakes.png": gallery_png(mistakes),
    }
    if "robustness" in metrics and metrics["robustness"]["n"]:
        pngs["robustness.png"] = robustness_png(metrics["robustness"])
    if metrics.get("open_set", {}).get("gate") and evaluation.pet_score is not None:
        pngs["open_set.png"] = open_set_png(evaluation, metrics["open_set"])
    for name, data in pngs.items():
        atomic_write_bytes(out / name, data)
    atomic_write_text(out / "metrics.json", json_text(metrics) + "\n")
    page = _html(metrics, pngs, mistakes, let_through(evaluation))
    atomic_write_text(out / "report.html", utf8_safe(page))  # the names in it; a lone surrogate cannot be written
    return out / "report.html"


ROBUSTNESS_HEAD = "<tr><th>corruption</th><th>severity 1</th><th>2</th><th>3</th></tr>"
PER_CLASS_HEAD = "<tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"


def _html(metrics: dict, pngs: dict[str, bytes], mistakes: list[dict], through: list[dict] = ()) -> str:
    classes = metrics["classes"]
    rows = "".join(
        f"<tr><td>{html_text(c)}</td><td>{_fmt(metrics['precision'][c])}</td><td>{_fmt(metrics['recall'][c])}</td>"
        f"<td>{_fmt(metrics['f1'][c])}</td><td>{metrics['support'][c]}</td></tr>"
        for c in classes
    )
    rows += (
        f"<tr><td><b>macro</b></td><td>{_fmt(metrics['precision']['macro'])}</td>"
        f"<td>{_fmt(metrics['recall']['macro'])}</td><td>{_fmt(metrics['f1']['macro'])}</td><td></td></tr>"
    )
    low, high = metrics["accuracy_interval"]
    # As percentages, as the console, data audit and the README say an accuracy (0.9167 here once).
    summary = (
        f"<tr><th>photos ({html_text(', '.join(classes))})</th><td>{metrics['n']}</td></tr>"
        f"<tr><th>accuracy</th><td>{percent(metrics['accuracy'])}</td></tr>"
        f"<tr><th>accuracy, 95% interval (Wilson)</th><td>{percent(low)}–{percent(high)}</td></tr>"
    )
    summary += "".join(
        f"<tr><th>{name}</th><td>{_fmt(metrics.get(key))}</td></tr>"
        for name, key in (
            ("log loss", "log_loss"),
            ("ROC AUC", "roc_auc"),
            ("ECE", "ece"),
            ("answered 'neither'", "neither"),
            ("answered 'unsure'", "unsure"),
        )
    )
    summary += f"<tr><th>unreadable files</th><td>{len(metrics['unreadable'])}</td></tr>"
    plots = "".join(_plot(name, pngs[name]) for name in ("confusion_matrix.png", "roc.png", "reliability.png"))
    gallery = ""
    for item in mistakes:
        uri = thumbnail_data_uri(item["path"]) or ""
        # A class is a folder's name, which may hold a control character as a file name may: escaped, line by line.
        probs = "<br>".join(map(html_text, mistake_probabilities(item, 3).splitlines()))
        gallery += (
            f'<figure class="mistake"><img src="{uri}" alt="{html_text(Path(item["path"]).name)}">'
            f"<figcaption>{html_text(Path(item['path']).name)}<br>true <b>{html_text(item['truth'])}</b> → "
            f"<b>{html_text(str(item['answer']))}</b><br>{probs}</figcaption></figure>"
        )
    robust = ""
    if "robustness.png" in pngs:
        r = metrics["robustness"]
        body = "".join(
            f"<tr><td>{name}</td>"
            + "".join(f"<td>{robustness_cell(v, n)}</td>" for v, n in zip(values, r["neither"][name]))
            + "</tr>"
            for name, values in r["accuracy"].items()
        )
        robust = (
            f"<h2>Robustness</h2><p>{counted(r['n'], 'photo')} of the model's classes; clean accuracy "
            f"{robustness_cell(r['clean'], r['clean_neither'])}. A photo answered 'neither' (the gate: its share is "
            "in brackets) or 'unsure' counts as wrong.</p>"
            + scrolling_table(ROBUSTNESS_HEAD + body, "Robustness")
            + _plot("robustness.png", pngs["robustness.png"])
        )
    open_set = _open_set_html(metrics.get("open_set"), pngs.get("open_set.png"), through)
    unreadable = "".join(f"<li>{html_text(u['error'])}</li>" for u in metrics["unreadable"])  # it names the file
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>catdog evaluation</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{PAGE_STYLE}</style></head><body>
<h1>catdog evaluation</h1>
{_what_was_measured(metrics)}
{scrolling_table(summary, "Summary")}
<p>{html.escape(LOG_LOSS_MEANS)} {html.escape(ROC_AUC_MEANS)} {html.escape(ECE_MEANS)}</p>
<p>{_what_is_counted(metrics)}</p>
<h2>Per class</h2>
{scrolling_table(PER_CLASS_HEAD + rows, "Per class")}
<h2>Plots</h2>{plots}
<h2>Most confidently wrong</h2>{gallery or "<p>No mistakes.</p>"}
{open_set}
{robust}
<h2>Unreadable files</h2>{f"<ul>{unreadable}</ul>" if unreadable else "<p>None.</p>"}
</body></html>
"""


def _what_is_counted(metrics: dict) -> str:
    """What the figures above count, and which probabilities they read (``--json`` says it as ``scope``)."""
    probabilities = (
        "are P(class | a cat or dog): <code>catdog predict</code> prints them times the gate's P(cat or dog)"
        if metrics.get("neither_threshold") is not None
        else "are the model's, as <code>catdog predict</code> prints them"
    )
    return (
        "Accuracy, recall and the confusion matrix count the answers 'neither' and 'unsure' as wrong; log loss, ROC "
        f"AUC, ECE and the class probabilities of the mistakes below {probabilities}."
    )


def _what_was_measured(metrics: dict) -> str:
    """Which model, on which photos, and how: a report read later must say what it measured."""
    split = metrics.get("split", "all")
    part = (
        "all photos"
        if split == "all"
        else f"only the photos in the model's <b>{html.escape(split)}</b> split (by content hash, as its training)"
    )
    lines = [
        f"Model <code>{html_text(str(metrics.get('model')))}</code> ({html.escape(str(metrics.get('backend')))})",
        f"Photos <code>{html_text(str(metrics.get('data')))}</code>: {part}",
    ]
    if metrics.get("tta"):
        lines.append("Each photo averaged with its mirror image (--tta)")
    if metrics.get("neither_threshold") is not None:
        below = f"{metrics['neither_threshold']:g}"
        lines.append(f"Answers 'neither' when P(cat or dog) is below {below} (the gate's threshold)")
    if metrics.get("threshold") is not None:
        lines.append(f"'unsure' below a confidence of {metrics['threshold']:g} (--threshold)")
    lines += [f"<b>Note:</b> {html_text(warning)}" for warning in metrics.get("warnings", [])]
    left_out = metrics.get("left_out") or []
    if left_out:
        # From the folder measured: a flat layout's left out are in folders, and 'dog.104.jpg' said not which.
        named = [html_text(os.path.relpath(p, metrics["data"])) for p in left_out[:5]]
        shown = ", ".join(named) + (" …" if len(left_out) > 5 else "")
        files = counted(len(left_out), "image file")
        them = "it" if len(left_out) == 1 else "them"  # "1 image file left out: ... gives them no label" was wrong
        lines.append(f"<b>Note:</b> {files} left out: the folder's layout gives {them} no label ({shown}).")
    return "".join(f"<p>{line}</p>" for line in lines)


# The open-set figures that are shares of photos, shown as percentages as the accuracy is, on the page and by
# `catdog evaluate` ("1.0000" beside "97.5%" read as two kinds of figure).
OPEN_SET_SHARES = ("neither_answered", "pets_turned_away", "fpr_at_95_tpr")


def open_set_value(open_set: dict, key: str, other: Callable[[object], str]) -> str:
    """The open-set figure ``key`` as shown: a share of photos as a percentage, anything else (or a share with no
    value) as ``other`` writes it."""
    value = open_set.get(key)
    return percent(value) if key in OPEN_SET_SHARES and value is not None else other(value)


def _open_set_html(open_set: dict | None, png: bytes | None, through: list[dict] = ()) -> str:
    """The open-set section: the figures of :func:`catdog.evaluate.open_set_metrics` and the score histogram."""
    if not open_set:
        return ""
    neither_photos = counted(open_set["n_neither"], "'neither' photo")
    if not open_set.get("gate"):  # nothing to tell pets from: a horse/cow model's report said "Pets versus neither"
        return (
            f"<h2>The 'neither' photos</h2><p>{neither_photos} (not in the figures above). "
            f"{html.escape(open_set['note'])}</p>"
        )
    head = (
        f"<h2>Pets versus neither</h2><p>{counted(open_set['n_pets'], 'photo')} of the model's classes, "
        f"{neither_photos} (not in the figures above).</p>"
    )
    rows = "".join(
        f"<tr><th>{name}</th><td>{open_set_value(open_set, key, _fmt)}</td></tr>"
        for name, key in (
            ("ROC AUC, pets versus neither", "roc_auc"),
            ("neither photos answered 'neither'", "neither_answered"),
            ("pets turned away (answered 'neither')", "pets_turned_away"),
            ("neither photos kept at 95% of pets kept (FPR at 95% TPR)", "fpr_at_95_tpr"),
            ("P(cat or dog) keeping 95% of pets", "score_at_95_tpr"),
            ("threshold: 'neither' below this P(cat or dog)", "threshold"),
        )
    )
    # The pets turned away are among the confident mistakes above; the non-pets let through only here.
    gallery = "".join(
        f'<figure class="mistake"><img src="{thumbnail_data_uri(item["path"]) or ""}" '
        f'alt="{html_text(Path(item["path"]).name)}"><figcaption>{html_text(Path(item["path"]).name)}<br>'
        f"neither → <b>{html_text(item['answer'])}</b><br>P(cat or dog) {item['pet_score']:.3f}</figcaption></figure>"
        for item in through
    )
    let_in = f"<h3>'neither' photos answered as a pet</h3>{gallery or '<p>None.</p>'}"
    figure = _plot("open_set.png", png) if png else ""
    return head + scrolling_table(rows, "Pets versus neither") + figure + let_in
