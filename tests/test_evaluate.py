"""catdog evaluate: metrics equal scikit-learn's on a hand-made case; the report is real PNG/HTML with the numbers.

A `neither` folder: its photos stay out of the plain metrics and give the open-set figures (built-in model).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics as skm

from catdog.data.layout import DatasetError
from catdog.evaluate import (
    Evaluation,
    _corrupt,
    collect,
    compute_metrics,
    evaluate,
    expected_calibration_error,
    open_set_metrics,
)
from catdog.fsutil import percent
from catdog.predict import Predictor
from test_train import copy_dev_subset

from conftest import chromium, run_catdog_in_process


def test_metrics_match_scikit_learn_on_a_hand_made_case() -> None:
    classes = ["cat", "dog"]
    truth = ["cat", "cat", "cat", "dog", "dog", "dog"]
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8], [0.45, 0.55], [0.7, 0.3]])
    predicted = ["cat", "cat", "dog", "dog", "neither", "cat"]  # one 'neither' counts as wrong
    m = compute_metrics(truth, probs, predicted, classes, [{"path": "x.jpg", "error": "bad"}])
    y = [0, 0, 0, 1, 1, 1]
    assert m["n"] == 6 and m["neither"] == 1
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, probs))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, probs[:, 1]))
    # cat: answered 3 times, 2 right; dog: answered twice, 1 right. 'neither' is a miss for recall.
    assert m["precision"]["cat"] == pytest.approx(2 / 3) and m["recall"]["cat"] == pytest.approx(2 / 3)
    assert m["precision"]["dog"] == pytest.approx(1 / 2) and m["recall"]["dog"] == pytest.approx(1 / 3)
    assert m["f1"]["macro"] == pytest.approx((2 / 3 + 0.4) / 2)
    assert m["confusion_matrix"] == [[2, 1, 0], [1, 1, 1]]
    assert m["confusion_columns"] == ["cat", "dog", "neither"]
    assert m["unreadable"] == [{"path": "x.jpg", "error": "bad"}]
    assert set(m) >= {"n", "accuracy", "log_loss", "roc_auc", "precision", "recall", "f1", "confusion_matrix"}
    assert {"classes", "ece", "unreadable"} <= set(m)


def test_expected_calibration_error() -> None:
    # Always 90% confident: right 90% of the time is calibrated, right half the time is 0.4 off.
    confidence = np.full(10, 0.9)
    assert expected_calibration_error(confidence, np.array([1] * 9 + [0])) == pytest.approx(0.0)
    assert expected_calibration_error(confidence, np.array([1, 0] * 5)) == pytest.approx(0.4)


@pytest.mark.parametrize("name", ["brightness", "contrast", "blur", "noise", "jpeg", "rotation", "crop"])
def test_corruptions_grow_with_severity(name: str, cat_photo: Path) -> None:
    import torch

    from catdog.preprocess import Preprocess, stack_uint8, to_uint8

    clean = torch.from_numpy(stack_uint8([to_uint8(cat_photo, Preprocess())]))
    changes = [(_corrupt(name, s, clean).float() - clean.float()).abs().mean().item() for s in (1, 2, 3)]
    assert 0 < changes[0] < changes[1] < changes[2]
    assert _corrupt(name, 2, clean).dtype == torch.uint8 and _corrupt(name, 2, clean).shape == clean.shape


@pytest.fixture(scope="module")
def eval_dir(samples_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 40 full-size samples (cat/, dog/) plus one broken file."""
    root = tmp_path_factory.mktemp("eval") / "photos"
    shutil.copytree(samples_dir, root)
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def test_cli_json_and_report(onnx_model_file: Path, eval_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    done = run_catdog_in_process(  # in this process: a subprocess would import torch again
        "evaluate", str(onnx_model_file), str(eval_dir), "--json", "--out", str(out), "--robustness",
        "--robustness-samples", "8",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["n"] == 40 and result["classes"] == ["cat", "dog"]
    assert [u["path"] for u in result["unreadable"]] == [str(eval_dir / "cat" / "broken.jpg")]
    assert sum(map(sum, result["confusion_matrix"])) == 40
    assert result["accuracy"] >= 0.85  # a real model on real photos
    assert set(result["robustness"]["accuracy"]) == {
        "brightness",
        "contrast",
        "blur",
        "noise",
        "jpeg",
        "rotation",
        "crop",
    }
    robust = result["robustness"]
    assert set(robust["neither"]) == set(robust["accuracy"])
    for name, shares in robust["neither"].items():  # a pet answered `neither` is one of the wrong ones
        assert all(0 <= n <= 1 - a + 1e-9 for a, n in zip(robust["accuracy"][name], shares)), (name, robust)
    for name in ("confusion_matrix.png", "roc.png", "reliability.png", "mistakes.png", "robustness.png"):
        with Image.open(out / name) as plot:
            assert plot.format == "PNG"
    page = (out / "report.html").read_text()
    turned_away = [n for shares in robust["neither"].values() for n in shares if n]
    assert ("% neither)" in page) == bool(turned_away)
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert f"<th>accuracy</th><td>{percent(result['accuracy'])}</td>" in page and f"{result['log_loss']:.4f}" in page
    assert "data:image/png;base64," in page and "broken.jpg" in page
    assert 'src="http' not in page and "src='http" not in page  # self-contained
    assert result["data"] == str(eval_dir) and result["split"] == "all" and result["tta"] is False
    assert f"<code>{eval_dir}</code>: all photos" in page  # a report read later says what it measured
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == result["accuracy"]


def test_the_report_names_the_gate_threshold_and_the_files_left_out(eval_dir: Path, tmp_path: Path) -> None:
    """--neither-threshold on a folder with no neither/ and an image the layout left out were in the console
    and metrics.json but nowhere in report.html."""
    data = tmp_path / "photos"
    shutil.copytree(eval_dir / "dog", data / "dog")
    shutil.copytree(eval_dir / "cat", data / "cat")
    shutil.copy(eval_dir / "dog" / "dog.1.jpg", data / "loose.jpg")
    result = evaluate(None, data, out_dir=tmp_path / "report", neither_threshold=0.3)
    page = (tmp_path / "report" / "report.html").read_text()
    assert result["left_out"] == [str(data / "loose.jpg")]
    assert "Answers 'neither' when P(cat or dog) is below 0.3 (the gate's threshold)" in page
    assert "1 image file left out: the folder's layout gives it no label (loose.jpg)." in page


def test_the_report_names_a_file_left_out_from_the_folder_measured(samples_dir: Path, tmp_path: Path) -> None:
    """Beside a flat layout the photos in a folder are left out, and report.html named them by their last name
    alone ('dog.1.jpg'), not where they are ('extra/dog.1.jpg')."""
    data = tmp_path / "photos"
    (data / "extra").mkdir(parents=True)
    for label in ("cat", "dog"):
        for photo in sorted((samples_dir / label).glob("*.jpg"))[:3]:
            shutil.copy(photo, data / photo.name)
    shutil.copy(samples_dir / "dog" / "dog.1.jpg", data / "extra" / "dog.1.jpg")
    evaluate(None, data, out_dir=tmp_path / "report")
    page = (tmp_path / "report" / "report.html").read_text()
    assert "1 image file left out: the folder's layout gives it no label (extra/dog.1.jpg)." in page, page


@pytest.fixture(scope="module")
def twelve_photos(samples_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six sample photos of each class, in cat/ and dog/: a small evaluation."""
    data = tmp_path_factory.mktemp("twelve") / "photos"
    for label in ("cat", "dog"):
        (data / label).mkdir(parents=True)
        for photo in sorted((samples_dir / label).glob("*.jpg"))[:6]:
            shutil.copy(photo, data / label / photo.name)
    return data


def test_the_report_and_the_console_say_what_log_loss_roc_auc_and_ece_are(twelve_photos: Path, tmp_path: Path) -> None:
    """report.html showed "log loss", "ROC AUC" and "ECE" beside their figures and said nowhere what they measure."""
    data = twelve_photos
    evaluate(None, data, out_dir=tmp_path / "report")
    page = (tmp_path / "report" / "report.html").read_text()
    said = page.index("Log loss is the mean, over the photos, of −ln of the probability the model gave the true class")
    assert page.index("<th>log loss</th>") < said < page.index("<h2>Per class</h2>")  # beside the figures
    auc = page.index("ROC AUC (the area under the ROC curve) is the chance that a photo of a class, picked at random")
    assert page.index("<th>ROC AUC</th>") < auc < page.index("<h2>Per class</h2>")
    assert "ECE (expected calibration error) sorts the photos into bins by the model&#x27;s confidence" in page
    # The console's summary says it in a few words, and docs/training.md in the report's sentences.
    done = run_catdog_in_process("evaluate", str(data))
    console = " ".join(done.stdout.split())  # rich wraps the line at the terminal's width
    assert "log loss: the mean of −ln P(true class), 0 at best; ROC AUC: how often a photo of a class" in console
    assert "0.5 by guessing; ECE: the mean gap between confidence and accuracy, 0 at best" in console
    docs = " ".join((Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text().split())
    assert "Log loss is the mean, over the photos, of −ln of the probability the model gave the true class" in docs
    assert "ROC AUC (the area under the ROC curve) is the chance that a photo of a class, picked at random" in docs
    assert "ECE (expected calibration error) sorts the photos into 15 bins of equal width" in docs


def test_the_accuracys_interval_is_wilsons() -> None:
    from scipy.stats import binomtest

    from catdog.evaluate import wilson_interval

    for right, n in ((11, 12), (12, 12), (0, 12), (2210, 2246), (1, 1)):
        interval = binomtest(right, n).proportion_ci(0.95, method="wilson")
        assert wilson_interval(right, n) == pytest.approx((interval.low, interval.high), abs=1e-12), (right, n)
    # 40 right of 40 read "95% interval 91.2%–100.0000%": the bound was 1 less a rounding error.
    for n in (12, 40, 2246):
        assert (percent(wilson_interval(n, n)[1]), wilson_interval(0, n)[0]) == ("100.0%", 0.0), n


def test_a_small_evaluation_says_how_rough_its_accuracy_is(twelve_photos: Path, tmp_path: Path) -> None:
    """`catdog evaluate` on 12 photos printed an accuracy of 0.9167 to four places, with no word that on photos
    like these it might as well be 0.65: the count and the 95 % interval are said now, first where they are few.
    As percentages, as data audit says its accuracy: evaluate's 0.9167 beside audit's 91.7% read as two scales."""
    from catdog.evaluate import FEW_PHOTOS, few_photos_note

    result = evaluate(None, twelve_photos, out_dir=tmp_path / "report")
    low, high = result["accuracy_interval"]
    right = round(result["accuracy"] * 12)
    assert low < result["accuracy"] <= high and high - low > 0.2  # 12 photos: wide
    note = (
        f"Only 12 photos, so the accuracy is a rough figure: {right} of 12 right, 95% interval "
        f"{percent(low)}–{percent(high)} (Wilson): the accuracy on many more photos like these would likely lie in it."
    )
    assert note in result["warnings"]
    page = (tmp_path / "report" / "report.html").read_text()
    assert f"<b>Note:</b> {note}" in page
    assert f"<th>accuracy, 95% interval (Wilson)</th><td>{percent(low)}–{percent(high)}</td>" in page  # beside it
    done = run_catdog_in_process("evaluate", str(twelve_photos))
    assert f"note: {note}" in done.stderr, done.stderr
    # One style of percentage: "(95 % interval 95.4%–99.9%)" mixed two.
    accuracy = f"accuracy {percent(result['accuracy'])} (95% interval {percent(low)}–{percent(high)})"
    assert accuracy in done.stdout and re.search(r"\d\.\d{4}–", done.stdout) is None, done.stdout
    assert re.search(r"\d %", done.stdout + done.stderr + page) is None, done.stdout
    # Many photos: the interval, but no note.
    many = {"n": FEW_PHOTOS, "accuracy": 0.98, "accuracy_interval": [0.95, 0.99]}
    assert few_photos_note(many) == [] and few_photos_note(many | {"n": FEW_PHOTOS - 1}) != []


@pytest.fixture(scope="module")
def phone_report(twelve_photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """report.html of the twelve photos, one of them a mistake and one unreadable, both with a long name."""
    tmp_path = tmp_path_factory.mktemp("phone")
    # A long name without a space (a phone's or a download's) in a mistake's caption and the unreadable list
    # overflowed them: the page was over 1,000 px wide.
    photos = tmp_path / "photos"
    shutil.copytree(twelve_photos, photos)
    long_name = "IMG_" + "0123456789" * 9
    shutil.copy(next((twelve_photos / "cat").glob("*.jpg")), photos / "dog" / f"{long_name}.jpg")  # a mistake
    (photos / "cat" / f"{long_name}.jpg").write_text("not a photo")
    report = Path(evaluate(None, photos, out_dir=tmp_path / "report")["report"])
    assert f"{long_name}.jpg" in report.read_text()
    return report


def test_the_report_fits_a_phone(phone_report: Path) -> None:
    """report.html was 455 px wide on a 375 px phone (its per-class table), and said no viewport, so a phone drew
    it 980 px wide and small. In real Chromium as a phone: the page is no wider than the screen."""
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 375, "height": 800}, is_mobile=True, has_touch=True)
        page.goto(phone_report.as_uri())
        assert page.evaluate("document.scrollingElement.scrollWidth") <= 375


# Each table's display, and the role, name and tab stop of the element around it.
TABLES_JS = """[...document.querySelectorAll('table')].map(t => [getComputedStyle(t).display,
    t.parentElement.getAttribute('role'), t.parentElement.getAttribute('aria-label'), t.parentElement.tabIndex])"""


def test_the_reports_tables_stay_tables_and_scroll_in_a_named_region(phone_report: Path) -> None:
    """The tables were styled display: block to scroll sideways on a phone, which takes their table semantics
    away in some browsers (WebKit's VoiceOver reads a flat list of cells). Each is now a table, inside a named
    region that scrolls and takes the keyboard's focus, and the page itself still never scrolls sideways."""
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 375, "height": 800}, is_mobile=True, has_touch=True)
        page.goto(phone_report.as_uri())
        assert page.evaluate(TABLES_JS) == [["table", "region", "Summary", 0], ["table", "region", "Per class", 0]]
        tree = page.get_by_role("region", name="Per class").aria_snapshot()
        assert "- table:" in tree and '- columnheader "precision"' in tree, tree
        assert re.search(r'- row "cat [0-9.]+ ', tree) and '- cell "' in tree, tree
        assert page.evaluate("document.scrollingElement.scrollWidth") <= 375


# The computed colours of the page's text and background, a table cell's border and a plot's card.
COLOURS_JS = """[getComputedStyle(document.body).color, getComputedStyle(document.body).backgroundColor,
    getComputedStyle(document.querySelector('td')).borderTopColor,
    getComputedStyle(document.querySelector('img[src^="data:image/png"]')).backgroundColor]"""


def test_the_report_follows_a_dark_colour_scheme(phone_report: Path) -> None:
    """report.html was black on white whatever the reader's scheme; in a dark one it is light on dark, its plots
    (drawn black on white) on a white card, and audit.html shares the style."""
    with chromium() as browser:
        colours = {}
        for scheme in ("light", "dark"):
            page = browser.new_page(viewport={"width": 1280, "height": 800}, color_scheme=scheme)
            page.goto(phone_report.as_uri())
            colours[scheme] = page.evaluate(COLOURS_JS)
    assert colours["light"] == ["rgb(34, 34, 34)", "rgb(255, 255, 255)", "rgb(204, 204, 204)", "rgb(255, 255, 255)"]
    assert colours["dark"] == ["rgb(232, 232, 232)", "rgb(22, 22, 22)", "rgb(85, 85, 85)", "rgb(255, 255, 255)"]


def test_the_report_prints_dark_on_white_in_a_dark_colour_scheme(phone_report: Path) -> None:
    """Chromium keeps a dark colour scheme while it prints, and prints no backgrounds by default: the dark style
    put light grey text on white paper. It is the screen's alone; a print is the light page's."""
    with chromium() as browser:
        page = browser.new_page(color_scheme="dark")
        page.goto(phone_report.as_uri())
        page.emulate_media(media="print")
        assert page.evaluate("matchMedia('(prefers-color-scheme: dark)').matches")  # the scheme is still dark
        colours = page.evaluate(COLOURS_JS)
    assert colours == ["rgb(34, 34, 34)", "rgb(255, 255, 255)", "rgb(204, 204, 204)", "rgb(255, 255, 255)"]


def test_no_photos_get_no_note_on_their_accuracy() -> None:
    """With no photo there is no accuracy (compute_metrics gives None for it and its interval) and nothing to say
    of how rough it is: the note unpacked the missing interval and failed. evaluate refuses such data before it."""
    from catdog.evaluate import few_photos_note

    assert few_photos_note({"n": 0, "accuracy": None, "accuracy_interval": None}) == []


def test_cli_text_output_and_errors(
    trained_model_dir: Path, eval_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CATDOG_BACKEND", "torch")  # in this process: seconds a run instead of an import each
    done = run_catdog_in_process("evaluate", str(trained_model_dir), str(eval_dir / "dog"))
    assert done.returncode == 0, done.stderr
    assert "accuracy" in done.stdout and "dog" in done.stdout
    foxes = tmp_path / "foxes" / "fox"
    foxes.mkdir(parents=True)
    shutil.copy(eval_dir / "cat" / "cat.1.jpg", foxes / "a.jpg")
    wrong = run_catdog_in_process("evaluate", str(trained_model_dir), str(foxes.parent))
    assert wrong.returncode == 2 and "fox" in wrong.stderr and "Traceback" not in wrong.stderr
    missing = run_catdog_in_process("evaluate", str(trained_model_dir), str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    # A loose photo beside the class folders is not evaluated, and the report says so, with a data check command
    # that pastes whole (it named 'catdog data check' without the folder).
    mixed = tmp_path / "Bob's mixed"
    for label in ("cat", "dog"):
        shutil.copytree(eval_dir / label, mixed / label)
    shutil.copy(eval_dir / "cat" / "cat.1.jpg", mixed / "cover.jpg")
    said = run_catdog_in_process("evaluate", str(trained_model_dir), str(mixed))
    assert said.returncode == 0 and "1 image file left out" in said.stdout and "cover.jpg" in said.stdout, said.stdout
    [typed] = [line.split("to list them: ")[1] for line in said.stdout.splitlines() if "left out" in line]
    assert shlex.split(typed) == ["catdog", "data", "check", str(mixed)], said.stdout


# -- a `neither` folder: open-set figures ------------------------------------------------------

NEITHER_SUBJECTS = ("horse", "flower", "car")
PER_SUBJECT = 6
PETS_PER_CLASS = 6


def test_open_set_metrics_on_a_hand_made_case() -> None:
    truth = ["cat", "dog", "cat", "dog", "neither", "neither", "neither", "neither"]
    scores = np.array([0.99, 0.9, 0.6, 0.3, 0.05, 0.4, 0.95, 0.2])
    predicted = ["cat", "dog", "cat", "neither", "neither", "neither", "dog", "neither"]
    m = open_set_metrics(truth, predicted, scores, 0.5)
    is_pet = [1, 1, 1, 1, 0, 0, 0, 0]
    assert m["n_pets"] == 4 and m["n_neither"] == 4 and m["gate"] is True and m["threshold"] == 0.5
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(is_pet, scores))
    assert m["roc_auc"] == pytest.approx(12 / 16)  # 16 pairs; the 0.95 neither beats 3 pets, the 0.4 one beats 0.3
    assert m["neither_answered"] == pytest.approx(3 / 4)
    assert m["pets_turned_away"] == pytest.approx(1 / 4)
    assert m["score_at_95_tpr"] == pytest.approx(0.3)  # keeping 95 % of 4 pets keeps all 4 (0.345 kept 3)
    # The highest cut that keeps at least 95 % of the pets: 19 of 20 (the lowest one let go), all of 19.
    for n, kept in ((20, 19), (19, 19), (21, 20), (100, 95)):
        pets = np.linspace(0.01, 0.99, n)
        case = open_set_metrics(["cat"] * n + ["neither"], ["cat"] * n + ["neither"], np.append(pets, 0.0), 0.005)
        assert int((pets >= case["score_at_95_tpr"]).sum()) == kept, n
    assert m["fpr_at_95_tpr"] == pytest.approx(2 / 4)  # 0.4 and 0.95 score above the cut
    no_gate = open_set_metrics(truth, ["cat"] * 8, None, None)
    assert no_gate == {"n_pets": 4, "n_neither": 4, "gate": False, "note": no_gate["note"]}
    assert "no 'neither' gate" in no_gate["note"]


@pytest.fixture(scope="module")
def open_set_dir(samples_dir: Path, data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few full-size cats and dogs, and a `neither/` folder of horses, flowers and cars (real photos)."""
    root = tmp_path_factory.mktemp("open_set") / "photos"
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for photo in sorted((samples_dir / label).glob("*.jpg"))[:PETS_PER_CLASS]:
            shutil.copy(photo, root / label / photo.name)
    (root / "neither").mkdir()
    for subject in NEITHER_SUBJECTS:
        photos = sorted(p for p in (data_root / "neither" / subject).iterdir() if p.is_file())[:PER_SUBJECT]
        assert len(photos) == PER_SUBJECT, f"too few photos in neither/{subject}"
        for photo in photos:
            shutil.copy(photo, root / "neither" / f"{subject}-{photo.name}")
    return root


@pytest.fixture(scope="module")
def pets_only_dir(open_set_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same cats and dogs without the `neither` folder."""
    root = tmp_path_factory.mktemp("pets_only") / "photos"
    for label in ("cat", "dog"):
        shutil.copytree(open_set_dir / label, root / label)
    return root


@pytest.fixture(scope="module")
def builtin() -> Predictor:
    return Predictor.load(None)


@pytest.fixture(scope="module")
def open_set_run(open_set_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("open_set_report")
    return evaluate(None, open_set_dir, out_dir=out), out


def test_neither_folder_gives_open_set_figures(open_set_run: tuple[dict, Path], builtin: Predictor) -> None:
    result, _ = open_set_run
    o = result["open_set"]
    n_neither = len(NEITHER_SUBJECTS) * PER_SUBJECT
    assert o["gate"] is True and o["n_pets"] == 2 * PETS_PER_CLASS and o["n_neither"] == n_neither
    assert o["threshold"] == pytest.approx(builtin.gate_threshold)
    for key in ("neither_answered", "pets_turned_away", "fpr_at_95_tpr", "score_at_95_tpr", "roc_auc"):
        assert 0.0 <= o[key] <= 1.0, (key, o[key])
    # Horses, flowers and cars are nothing like cats and dogs.
    assert o["roc_auc"] > 0.9
    assert o["neither_answered"] >= 0.8 and o["pets_turned_away"] <= 0.2 and o["fpr_at_95_tpr"] <= 0.2
    # Plain metrics: only the pets count, and a pet turned away is one of `neither` pets answers.
    assert result["n"] == 2 * PETS_PER_CLASS and result["classes"] == ["cat", "dog"]
    assert sum(map(sum, result["confusion_matrix"])) == 2 * PETS_PER_CLASS
    assert sum(result["support"].values()) == 2 * PETS_PER_CLASS
    assert result["neither"] == round(o["pets_turned_away"] * o["n_pets"])
    assert result["accuracy"] >= 0.8 and "only" in result["scope"]


def test_open_set_figures_agree_with_the_predictions(open_set_dir: Path, builtin: Predictor) -> None:
    """The figures follow from the public Predictions: P(cat or dog) = 1 − P(neither), labels as answered."""
    evaluation = collect(builtin, open_set_dir)
    predictions = {p.source: p for p in builtin.predict_paths(evaluation.paths)}
    pet_score = np.array([1.0 - predictions[path].probabilities["neither"] for path in evaluation.paths])
    np.testing.assert_allclose(evaluation.pet_score, pet_score, atol=1e-6)
    is_pet = np.array([t != "neither" for t in evaluation.truth])
    m = open_set_metrics(evaluation.truth, evaluation.predicted, evaluation.pet_score, builtin.gate_threshold)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(is_pet, pet_score), abs=1e-3)
    said_neither = np.array([predictions[path].label == "neither" for path in evaluation.paths])
    assert m["neither_answered"] == pytest.approx(said_neither[~is_pet].mean())
    assert m["pets_turned_away"] == pytest.approx(said_neither[is_pet].mean())
    # The class probabilities of the plain metrics are P(class | a pet): they sum to one.
    np.testing.assert_allclose(evaluation.probs.sum(axis=1), 1.0, atol=1e-9)


def test_neither_photos_change_no_plain_metric(open_set_run: tuple[dict, Path], pets_only_dir: Path) -> None:
    with_neither, _ = open_set_run
    pets_only = evaluate(None, pets_only_dir)
    assert "open_set" not in pets_only
    for key in ("n", "accuracy", "log_loss", "roc_auc", "ece", "precision", "recall", "neither"):
        assert with_neither[key] == pytest.approx(pets_only[key]), key
    assert with_neither["confusion_matrix"] == pets_only["confusion_matrix"]


def test_a_strict_threshold_turns_pets_away_and_counts_them_wrong(open_set_dir: Path) -> None:
    result = evaluate(None, open_set_dir, neither_threshold=1.0)  # never sure of a pet: all `neither`
    o = result["open_set"]
    assert o["threshold"] == 1.0 and o["pets_turned_away"] == 1.0 and o["neither_answered"] == 1.0
    assert result["accuracy"] == 0.0 and result["neither"] == 2 * PETS_PER_CLASS
    assert result["confusion_columns"] == ["cat", "dog", "neither"]
    assert [row[2] for row in result["confusion_matrix"]] == [PETS_PER_CLASS, PETS_PER_CLASS]
    assert o["roc_auc"] > 0.9  # the threshold moves the answers, not the scores


def test_the_report_says_a_gated_models_probabilities_are_given_a_pet(pets_only_dir: Path, tmp_path: Path) -> None:
    """A pet the gate turned away showed "cat 1.000, dog 0.000" under "true cat → neither" in the gallery, and the
    report said nowhere that these (and log loss, ROC AUC, ECE) are P(class | a cat or dog), not what `catdog
    predict` prints; the gate's own P(cat or dog) was not shown. Now each mistake shows it first."""
    evaluate(None, pets_only_dir, out_dir=tmp_path, neither_threshold=1.0)  # every pet turned away
    page = (tmp_path / "report.html").read_text()
    assert "the class probabilities of the mistakes below are P(class | a cat or dog)" in page
    caption = r"→ <b>(\w+)</b><br>P\(cat or dog\) ([0-9.]+)<br>given a cat or dog: cat ([0-9.]+), dog ([0-9.]+)"
    shown = re.findall(caption, page)
    assert len(shown) == 2 * PETS_PER_CLASS and all(answer == "neither" for answer, *_ in shown)
    # Real pets score high on the gate (the threshold of 1.0 alone turned them away); their classes sum to 1.
    assert all(float(pet) > 0.5 and float(cat) + float(dog) == pytest.approx(1, abs=2e-3) for _, pet, cat, dog in shown)


def test_report_shows_the_open_set_plot_and_figures(open_set_run: tuple[dict, Path]) -> None:
    result, out = open_set_run
    o = result["open_set"]
    with Image.open(out / "open_set.png") as plot:
        assert plot.format == "PNG"
    page = (out / "report.html").read_text()
    assert "<figcaption>open_set.png</figcaption>" in page and "Pets versus neither" in page
    assert 'alt="Histograms of P(cat or dog) for the pet photos and the neither photos' in page
    section = page[page.index("Pets versus neither") :]
    for key in ("roc_auc", "threshold"):
        assert f"<td>{o[key]:.4f}</td>" in section, key
    # Shares of photos as percentages, as the accuracy above them ("1.0000" read as another scale beside "97.5%").
    for key in ("neither_answered", "pets_turned_away", "fpr_at_95_tpr"):
        assert f"<td>{percent(o[key])}</td>" in section, key
    assert json.loads((out / "metrics.json").read_text())["open_set"] == o


def test_the_open_set_plots_legend_lies_off_its_data() -> None:
    """The legend sat inside the plot at its top centre, over the threshold line at 0.5 and the bars near it (on
    the built-in model's scores of 40 pets and 71 non-pets): it now lies outside the axes."""
    from catdog.report import open_set_figure

    scores = np.array([0.99] * 38 + [0.55, 0.45] + [0.01] * 69)
    truth = ["cat"] * 40 + ["neither"] * 69
    evaluation = Evaluation(["cat", "dog"], [""] * len(truth), truth, np.zeros((len(truth), 2)), truth, [], scores)
    figure = open_set_figure(evaluation, {"threshold": 0.5, "score_at_95_tpr": 0.98, "roc_auc": 1.0})
    figure.canvas.draw()
    legend, axes = figure.axes[0].get_legend().get_window_extent(), figure.axes[0].get_window_extent()
    assert not legend.overlaps(axes), (legend, axes)
    # Below the axes, it must also clear the x axis's tick labels and its label "P(cat or dog)".
    x_axis = figure.axes[0].xaxis.get_tightbbox()
    assert not legend.overlaps(x_axis), (legend, x_axis)


def test_the_report_shows_the_non_pets_let_through(open_set_dir: Path, tmp_path: Path) -> None:
    """A wolf answered "dog" was in no gallery (the confident mistakes are pets): the open-set section shows the
    `neither` photos answered as a pet, the likeliest pet first."""
    from catdog.report import GALLERY_SIZE

    result = evaluate(None, open_set_dir, out_dir=tmp_path, neither_threshold=0.0)  # every photo let through
    assert result["open_set"]["neither_answered"] == 0.0
    page = (tmp_path / "report.html").read_text()
    section = page[page.index("'neither' photos answered as a pet") :]
    shown = re.findall(r"neither → <b>(\w+)</b><br>P\(cat or dog\) ([0-9.]+)", section)
    assert len(shown) == min(GALLERY_SIZE, len(NEITHER_SUBJECTS) * PER_SUBJECT)
    assert {answer for answer, _ in shown} <= {"cat", "dog"}
    assert [float(p) for _, p in shown] == sorted((float(p) for _, p in shown), reverse=True)
    default = evaluate(None, open_set_dir, out_dir=tmp_path / "default")  # the gate as shipped: what it lets in
    let_in = round((1 - default["open_set"]["neither_answered"]) * len(NEITHER_SUBJECTS) * PER_SUBJECT)
    page = (tmp_path / "default" / "report.html").read_text()
    assert page[page.index("'neither' photos answered as a pet") :].count('class="mistake"') == let_in


def test_no_open_set_without_a_neither_folder_or_a_gate(
    pets_only_dir: Path, open_set_dir: Path, builtin: Predictor, tmp_path: Path
) -> None:
    result = evaluate(None, pets_only_dir, out_dir=tmp_path)
    assert "open_set" not in result
    assert (
        not (tmp_path / "open_set.png").exists() and "Pets versus neither" not in (tmp_path / "report.html").read_text()
    )
    # A model without a gate answers cat or dog for everything: the section says so, with no figures.
    ungated = collect(dataclasses.replace(builtin, gate_threshold=None), open_set_dir)
    assert ungated.pet_score is None and "neither" not in ungated.predicted
    m = open_set_metrics(ungated.truth, ungated.predicted, ungated.pet_score, ungated.gate_threshold)
    assert m["gate"] is False and m["n_neither"] == len(NEITHER_SUBJECTS) * PER_SUBJECT and "roc_auc" not in m


def test_unknown_classes_and_neither_only_data_are_clear_errors(
    open_set_dir: Path, builtin: Predictor, tmp_path: Path
) -> None:
    only = tmp_path / "only"
    shutil.copytree(open_set_dir / "neither", only / "neither")
    with pytest.raises(DatasetError, match="only 'neither' photos"):
        collect(builtin, only)
    shutil.copytree(open_set_dir / "cat", tmp_path / "foxes" / "fox")
    shutil.copytree(open_set_dir / "neither", tmp_path / "foxes" / "other")  # `other/` is `neither` too
    with pytest.raises(DatasetError, match="fox") as err:
        collect(builtin, tmp_path / "foxes")
    assert "neither" not in str(err.value).split("(")[0]


def test_cli_prints_the_open_set_figures(open_set_dir: Path, open_set_run: tuple[dict, Path]) -> None:
    result, _ = open_set_run
    done = run_catdog_in_process("evaluate", str(open_set_dir))
    assert done.returncode == 0, done.stderr
    o = result["open_set"]
    assert f"{o['n_pets']} pets, {o['n_neither']} 'neither' photos" in done.stdout
    assert f"ROC AUC {o['roc_auc']:.4f}" in done.stdout
    for name, key in (
        ("neither answered 'neither'", "neither_answered"),
        ("pets turned away", "pets_turned_away"),
        ("FPR at 95% TPR", "fpr_at_95_tpr"),
    ):
        assert f"{name} {percent(o[key])}" in done.stdout, name  # a share, as the accuracy: it was 1.0000
    assert f"on {result['n']} photos" in done.stdout


def test_the_train_command_a_missing_test_split_suggests_names_the_data() -> None:
    """`evaluate --split test` of a model trained without one suggested "catdog train --test-fraction 0.1", which,
    pasted, train refuses for its missing DATA_DIR."""
    from catdog.evaluate import held_out

    with pytest.raises(DatasetError) as refused:
        held_out({}, ["cat", "dog"], {"split": {"val_fraction": 0.2, "test_fraction": 0.0}}, "test")
    assert "(catdog train DATA_DIR --test-fraction 0.1 holds one out)" in str(refused.value)


def test_a_user_is_told_when_training_photos_are_measured_or_a_split_is_of_another_folder(tmp_path: Path) -> None:
    """Measuring a model on its own training folder flatters it, and --split of a folder it never saw measures
    a tenth of the photos: both are easy to do unawares, so evaluate says so (and computes the figures all the same)."""
    from catdog.evaluate import split_warnings

    trained_on, other = tmp_path / "data", tmp_path / "other"
    trained_on.mkdir(), other.mkdir()
    info = {"data": {"root": str(trained_on), "train_images": 270}}
    (flattering,) = split_warnings(info, trained_on, "all", 300)
    assert "270 of its photos trained it" in flattering and "--split val" in flattering
    (foreign,) = split_warnings(info, other, "val", 14)
    assert f"'{trained_on}'" in foreign and "only the 14 photos of it in that part" in foreign
    (one,) = split_warnings(info, other, "val", 1)  # "the 1 of its photos that fall" once
    assert "only the 1 photo of it in that part" in one, one
    assert split_warnings(info, trained_on / ".", "val", 30) == []  # the same folder, spelt otherwise
    assert split_warnings(info, other, "all", 300) == []
    assert split_warnings({"classes": ["cat", "dog"]}, trained_on, "all", 300) == []  # the built-in model


def test_the_built_in_model_measured_on_kaggle_photos_says_they_trained_it(dev_dir: Path, tmp_path: Path) -> None:
    """The built-in models learnt from Kaggle's Dogs vs. Cats photos; measured on them (named cat.N.jpg as
    Kaggle names them) they score as on their training data, so evaluate says so, and only then."""
    from catdog.evaluate import split_warnings

    kaggle = copy_dev_subset(dev_dir, tmp_path / "kaggle", 3)
    result = evaluate(None, kaggle)
    warning, few = result["warnings"]  # the Kaggle photos, then: only 6 photos
    assert warning == (
        "6 of these photos are named like Kaggle's Dogs vs. Cats photos (cat.N.jpg, dog.N.jpg), which the built-in "
        "model learnt from, so these figures may flatter it: photos from elsewhere measure it fairly."
    )
    assert few.startswith("Only 6 photos")
    renamed = tmp_path / "mine"
    for photo in kaggle.glob("*.jpg"):
        (renamed / photo.name.split(".")[0]).mkdir(parents=True, exist_ok=True)
        photo.rename(renamed / photo.name.split(".")[0] / f"IMG_{photo.name.split('.')[1]}.jpg")
    assert [w for w in evaluate(None, renamed)["warnings"] if not w.startswith("Only 6 photos")] == []
    names = [f"cat.{i}.jpg" for i in range(5)] + ["a.jpg"] * 4
    assert split_warnings({}, kaggle, "all", 9, "builtin-large", names)  # 5 of 9: most of them
    assert not split_warnings({}, kaggle, "all", 11, "builtin-large", names + ["b.jpg"] * 2)  # 5 of 11: a few
    assert not split_warnings({}, kaggle, "test", 9, "builtin", names)  # a split of the folder: not its training
    assert not split_warnings({}, kaggle, "all", 9, "my-model", names)  # a model trained on other photos


def test_a_model_of_other_classes_is_not_said_to_tell_pets_from_neither(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A horse/cow model evaluated beside a neither/ folder printed "pets versus neither (73 pets, ..." and its
    report a "Pets versus neither" section: there are no pets, and no gate to tell anything from `neither`."""
    from catdog.models import build_model, save_model_dir
    from catdog.preprocess import Preprocess

    monkeypatch.setenv("CATDOG_BACKEND", "torch")  # the wording is tested, not an ONNX export of random weights
    pre = Preprocess(image_size=64, crop_pct=1.0, interpolation="bilinear")
    config = {"architecture": "catnet", "classes": ["cow", "horse"], "preprocess": pre.to_dict(), "gate": None}
    save_model_dir(build_model("catnet", 2, pretrained=False).eval(), config, tmp_path / "model")
    data = tmp_path / "photos"
    for label, source in (("cow", "cow"), ("horse", "horse"), ("neither", "food")):
        (data / label).mkdir(parents=True)
        for photo in sorted((data_root / "neither" / source).glob("*"))[:3]:
            shutil.copy(photo, data / label / photo.name)
    done = run_catdog_in_process("evaluate", str(tmp_path / "model"), str(data), "--out", str(tmp_path / "report"))
    assert done.returncode == 0, done.stderr
    assert "3 'neither' photos, not counted above. The model has no 'neither' gate" in done.stdout, done.stdout
    page = (tmp_path / "report" / "report.html").read_text()
    assert "pets" not in done.stdout.lower() and "Pets versus neither" not in page
    assert "<h2>The 'neither' photos</h2>" in page


@pytest.mark.parametrize(
    ("accuracy", "neither", "cell"),
    [
        (1.0, 0.0, "1.000"),
        (0.0, 1.0, "0.000 (100% neither)"),
        (0.85, 0.12, "0.850 (12% neither)"),
        (0.99, 1 / 300, "0.990 (<1% neither)"),  # read "(0% neither)"
        (1 / 300, 299 / 300, "0.003 (>99% neither)"),  # read "(100% neither)" beside an accuracy above 0
    ],
)
def test_a_robustness_cell_never_rounds_its_neither_share_to_either_end(accuracy, neither, cell) -> None:
    from catdog.report import robustness_cell

    assert robustness_cell(accuracy, neither) == cell


def test_one_unreadable_file_is_counted_as_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`catdog evaluate` printed "1 unreadable files:" (and the title "on 1 photos" for one photo)."""
    from catdog.models import build_model, save_model_dir
    from catdog.preprocess import Preprocess

    monkeypatch.setenv("CATDOG_BACKEND", "torch")  # the wording is tested, not an ONNX export of random weights
    pre = Preprocess(image_size=64, crop_pct=1.0, interpolation="bilinear")
    config = {"architecture": "catnet", "classes": ["cat", "dog"], "preprocess": pre.to_dict(), "gate": None}
    save_model_dir(build_model("catnet", 2, pretrained=False).eval(), config, tmp_path / "model")
    data = tmp_path / "photos"
    for label in ("cat", "dog"):
        (data / label).mkdir(parents=True)
    Image.new("RGB", (80, 80), (200, 120, 40)).save(data / "cat" / "1.jpg")
    (data / "dog" / "1.jpg").write_bytes(b"not a JPEG")
    done = run_catdog_in_process("evaluate", str(tmp_path / "model"), str(data), "--out", str(tmp_path / "report"))
    assert done.returncode == 0, done.stderr
    assert "1 unreadable file:" in done.stdout and "on 1 photo" in done.stdout, done.stdout
    assert "1 unreadable files" not in done.stdout and "1 photos" not in done.stdout, done.stdout


def test_the_report_counts_one_pet_photo_as_one() -> None:
    """Found reviewing the "1 files" fix: the HTML report's "Pets versus neither" still said "1 photos"."""
    from catdog.report import _open_set_html

    section = _open_set_html({"gate": True, "n_pets": 1, "n_neither": 1, "threshold": 0.5}, b"")
    assert "<p>1 photo of the model's classes, 1 'neither' photo " in section, section


def test_control_characters_in_a_name_are_shown_escaped_in_the_report(twelve_photos: Path, tmp_path: Path) -> None:
    """A right-to-left override (U+202E) in a file name went raw into report.html, where the rest of the line read
    backwards, while the console escaped it: the page now shows it as the console does."""
    data = tmp_path / "photos"
    shutil.copytree(twelve_photos, data)
    (data / "dog" / "x\u202egnp.jpg").write_bytes(b"not a JPEG")
    (data / "cat" / "two\nlines.jpg").write_bytes(b"not a JPEG")
    evaluate(None, data, out_dir=tmp_path / "report")
    page = (tmp_path / "report" / "report.html").read_text()
    assert "\u202e" not in page and "two\nlines" not in page
    assert "x\\u202egnp.jpg" in page and "two\\nlines.jpg" in page, page


def test_control_characters_in_a_class_name_are_shown_escaped(samples_dir: Path, tmp_path: Path) -> None:
    """A class is a folder's name, and a right-to-left override (U+202E) in it went raw into report.html (the
    per-class table, the count of photos, each mistake's caption) and into the console's table, where the rest of
    the row read backwards: both show it escaped now, as a file name's."""
    import torch

    from catdog.models import build_model, save_model_dir
    from catdog.preprocess import Preprocess

    fox = "fo\u202ex"
    torch.manual_seed(0)  # untrained, and the same every run: it gets some photos wrong, for the mistakes' captions
    model = build_model("seed-cnn", 2).eval()
    model(torch.zeros(1, 3, 64, 64))  # materialise the lazy layers
    config = {"architecture": "seed-cnn", "classes": [fox, "wolf"], "preprocess": Preprocess(image_size=64).to_dict()}
    save_model_dir(model, config, tmp_path / "model")
    for folder, label in ((fox, "cat"), ("wolf", "dog")):
        (tmp_path / "data" / folder).mkdir(parents=True)
        for photo in sorted((samples_dir / label).glob("*.jpg"))[:3]:
            shutil.copy(photo, tmp_path / "data" / folder)
    done = run_catdog_in_process(
        "evaluate", str(tmp_path / "model"), str(tmp_path / "data"), "-o", str(tmp_path / "out")
    )
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "out" / "report.html").read_text()
    assert "\u202e" not in page and "\u202e" not in done.stdout, done.stdout
    assert "<tr><td>fo\\u202ex</td>" in page and "<th>photos (fo\\u202ex, wolf)</th>" in page, page
    assert "fo\\u202ex │" in done.stdout, done.stdout
    assert re.search(
        r"<figcaption>[^<]*<br>true <b>(fo\\u202ex|wolf)</b> → <b>(fo\\u202ex|wolf)</b><br>fo\\u202ex 0", page
    )


def test_a_missing_folder_is_refused_before_the_model_is_exported(
    trained_model_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """`catdog evaluate builtin-large nosuch` exported the model to ONNX first (minutes on a CPU, said on stderr),
    and only then said that 'nosuch' does not exist."""
    missing = tmp_path / "nosuch"
    done = run_catdog_in_process("evaluate", str(trained_model_dir), str(missing))
    assert done.returncode == 2 and "nosuch" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "Exporting" not in done.stderr and not (cache_dir / "onnx").exists(), done.stderr


def test_out_dash_is_refused_before_any_work(
    trained_model_dir: Path, samples_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`catdog evaluate MODEL DATA --out -` (standard output to most tools) wrote its report into a folder named
    '-' and said "Report: -/report.html"."""
    monkeypatch.chdir(tmp_path)
    done = run_catdog_in_process("evaluate", str(trained_model_dir), str(samples_dir), "--out", "-")
    assert done.returncode == 2 and "--out '-': catdog writes a folder, not standard output" in done.stderr, done
    assert not (tmp_path / "-").exists()
