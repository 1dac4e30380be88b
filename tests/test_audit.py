"""catdog data audit finds the labels this test flips on purpose in a small real set.

The command runs in this process (run_catdog_in_process): what it prints and writes is tested, not its process,
and a subprocess each would import torch and load the model again.
"""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

import pytest

from conftest import chromium, run_catdog_in_process

FLIPPED = {"cat.3003.jpg": "dog", "cat.3021.jpg": "dog", "dog.3012.jpg": "cat"}


def test_audit_ranks_the_flipped_labels_first(trained_model_dir: Path, dev_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    for label in ("cat", "dog"):
        (data / label).mkdir(parents=True)
    for label in ("cat", "dog"):
        for i in range(3000, 3040):
            name = f"{label}.{i}.jpg"
            shutil.copy(dev_dir / name, data / FLIPPED.get(name, label) / name)
    (data / "cat" / "empty.jpg").write_bytes(b"")
    out = tmp_path / "audit"
    done = run_catdog_in_process(
        "data", "audit", str(data), "--model", str(trained_model_dir), "--out", str(out), "--json"
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["n"] == 80 and [Path(u["path"]).name for u in result["unreadable"]] == ["empty.jpg"]
    ranked = [Path(s["path"]).name for s in result["suspects"]]
    assert set(ranked[: len(FLIPPED) + 1]) >= set(FLIPPED)
    for s in result["suspects"]:
        if Path(s["path"]).name in FLIPPED:
            assert s["suggested"] == Path(s["path"]).name.split(".")[0] and s["confidence"] > 0.5
    saved = json.loads((out / "suspects.json").read_text())
    assert saved["suspects"] == result["suspects"]
    page = (out / "audit.html").read_text()
    assert all(name in page for name in FLIPPED) and "data:image/jpeg;base64," in page
    # The page names the unreadable file and says why, as data check does: it said only "1 unreadable file.".
    empty = html.escape(f"'{data / 'cat' / 'empty.jpg'}' is empty (0 bytes).")
    assert f"1 unreadable file, left out of the audit:</p><ul><li>{empty}</li></ul>" in page
    # --top limits the JSON too (data.md: "--top 50 --json: the 50 strongest suspects"); it once printed all.
    assert len(result["suspects"]) > 2
    top = run_catdog_in_process("data", "audit", str(data), "--model", str(trained_model_dir), "--top", "2", "--json")
    assert json.loads(top.stdout)["suspects"] == result["suspects"][:2]
    assert json.loads(top.stdout)["n_suspects"] == len(result["suspects"])  # how many --top left out
    # A model directory named like an ONNX file is read as the directory it is: audit opened it as an .onnx file.
    named = tmp_path / "cats.onnx"
    shutil.copytree(trained_model_dir, named)
    renamed = run_catdog_in_process("data", "audit", str(data), "--model", str(named), "--top", "2", "--json")
    assert renamed.returncode == 0, renamed.stderr
    assert json.loads(renamed.stdout)["suspects"] == result["suspects"][:2]


def test_audit_finds_the_cat_in_the_neither_folder(
    trained_model_dir: Path, dev_dir: Path, data_root: Path, tmp_path: Path
) -> None:
    """Real non-pet photos in neither/ plus one real cat photo: the cat is the top `neither` suspect."""
    data = tmp_path / "data"
    for label in ("cat", "dog", "neither"):
        (data / label).mkdir(parents=True)
    for label in ("cat", "dog"):
        for i in range(3100, 3120):
            shutil.copy(dev_dir / f"{label}.{i}.jpg", data / label / f"{label}.{i}.jpg")
    non_pets = [
        p for subject in ("car", "building", "food") for p in sorted((data_root / "neither" / subject).iterdir())[:6]
    ]
    for src in non_pets:
        shutil.copy(src, data / "neither" / src.name)
    stray = "cat.3150.jpg"
    shutil.copy(dev_dir / stray, data / "neither" / stray)
    # And a horse among the dogs: no cat-or-dog fit can say so (it once went unlisted), the gate can.
    horse = data_root / "neither" / "horse" / "inet-n02389026_sorrel.JPEG"
    shutil.copy(horse, data / "dog" / horse.name)

    done = run_catdog_in_process("data", "audit", str(data), "--model", str(trained_model_dir), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["classes"] == ["cat", "dog"]
    assert result["n"] == 41 + len(non_pets) + 1 and result["neither"] == len(non_pets) + 1
    assert result["neither_judged"] is True
    ranked = [(Path(s["path"]).name, s["label"], s["suggested"]) for s in result["suspects"]]
    assert (stray, "neither", "cat") in ranked[:2] and (horse.name, "dog", "neither") in ranked[:2], ranked[:5]
    # The real non-pet photos are not suspects: the gate sees no cat or dog in them.
    flagged = {name for name, label, _ in ranked if label == "neither"}
    assert flagged == {stray}, flagged

    text = run_catdog_in_process("data", "audit", str(data), "--model", str(trained_model_dir), "--top", "3")
    assert text.returncode == 0, text.stderr
    assert f"{len(non_pets) + 1} neither photos judged" in text.stdout
    # The accuracy is over the pets, and the line says so (it once counted the neither photos into "photos"), as
    # a percentage of the cat-or-dog answers; each suspect's kind is said: "out-of-fold accuracy 1.0000; 1 disagrees
    # with its label" once, the one turned away by the gate, not answered the other class.
    accuracy = result["out_of_fold_accuracy"]
    right = round(accuracy * 41)
    assert text.stdout.startswith(
        f"41 photos of cat and dog, out-of-fold accuracy {accuracy:.1%} ({right} of 41 answered their own class, "
        "cat or dog, by a fit on the other folds); "
    ), text.stdout
    away = sum(s["suggested"] == "neither" for s in result["suspects"])  # the horse, and any pet the gate errs on
    other = len(result["suspects"]) - away - 1  # the stray cat aside
    said = ", ".join(
        [f"{other} answered the other class"] * bool(other)
        + [f"{away} answered neither by the gate", "1 labelled neither but answered cat or dog by the gate"]
    )
    assert f"\n{len(result['suspects'])} suspects: {said}. Most likely mislabelled:\n" in text.stdout, text.stdout
    assert f"neither/{stray}: labelled neither, looks like cat" in text.stdout


def test_audit_needs_two_classes(dev_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    shutil.copy(dev_dir / "cat.1.jpg", tmp_path / "cat" / "cat.1.jpg")
    done = run_catdog_in_process("data", "audit", str(tmp_path))
    assert done.returncode == 2 and "two or more" in done.stderr
    # A `neither` folder is no second class to compare with.
    (tmp_path / "other").mkdir()
    shutil.copy(dev_dir / "dog.1.jpg", tmp_path / "other" / "dog.1.jpg")
    done = run_catdog_in_process("data", "audit", str(tmp_path))
    assert done.returncode == 2 and "two or more" in done.stderr and "neither" in done.stderr


def test_a_class_of_one_photo_is_named_before_any_feature_is_computed(dev_dir: Path, tmp_path: Path) -> None:
    """A French 'Chats/' folder beside 'Cats/' is a class 'chat' of one photo: the audit computed every photo's
    features (a minute on the first run) and then said only that it "needs at least 2 readable photos per class",
    not which class nor where."""
    for folder, names in (
        ("Cats", ("cat.1.jpg", "cat.2.jpg")),
        ("Dogs", ("dog.1.jpg", "dog.2.jpg")),
        ("Chats", ("cat.3.jpg",)),
    ):
        (tmp_path / folder).mkdir()
        for name in names:
            shutil.copy(dev_dir / name, tmp_path / folder / name)
    done = run_catdog_in_process("data", "audit", str(tmp_path))
    assert done.returncode == 2
    said = " ".join(done.stderr.split())
    assert f"has 1 photo of class 'chat' ('{tmp_path / 'Chats' / 'cat.3.jpg'}'); an audit needs at least 2" in said
    # Two files, one of them no photo: the same sentence once they are read.
    (tmp_path / "Chats" / "note.jpg").write_text("not a photo")
    done = run_catdog_in_process("data", "audit", str(tmp_path))
    said = " ".join(done.stderr.split())
    assert done.returncode == 2 and "has 1 readable photo of class 'chat' ('" in said, said
    # And the file that is no photo, named with why: the count alone left a newcomer looking at two files.
    # In one sentence, as every refusal: "... add photos. 1 of its files cannot be read: ..." was two.
    assert f"photos); 1 of its files cannot be read: '{tmp_path / 'Chats' / 'note.jpg'}' is not an image" in said, said
    assert said.count(". ") == 0, said


def test_three_classes_are_listed_in_words() -> None:
    """A cat/dog/rabbit data set's audit read "148 photos of cat and dog and rabbit"."""
    from catdog.audit import AuditResult, pets_counted

    assert pets_counted(AuditResult(148, ["cat", "dog", "rabbit"], 5, [], 0.98)) == "148 photos of cat, dog and rabbit"
    assert pets_counted(AuditResult(73, ["cow", "horse"], 5, [], 0.92)) == "73 photos of cow and horse"


@pytest.mark.slow  # a whole audit run (~17 s on 2 cores)
def test_the_report_of_gateless_photos_speaks_of_no_gate(data_root: Path, dev_dir: Path, tmp_path: Path) -> None:
    """Photos of other classes than cat and dog: no gate judges them, yet audit.html said its suspects were also
    those "that the model's gate puts on the other side of cat-or-dog", and the neither photos went unjudged
    because "the model has no cat/dog gate" (the built-in model has one; the photos are not of cats and dogs).
    Its one suspect read "1 suspects" there and "1 disagree with their label" on the terminal."""
    data = tmp_path / "data"
    for subject in ("bird", "rabbit"):
        (data / subject).mkdir(parents=True)
        for photo in sorted((data_root / "neither" / subject).iterdir())[:40]:
            shutil.copy(photo, data / subject / photo.name)
    (data / "neither").mkdir()
    for i in range(3):  # photos of neither bird nor rabbit, which no gate can judge here
        shutil.copy(dev_dir / f"cat.{3200 + i}.jpg", data / "neither" / f"cat.{3200 + i}.jpg")
    out = tmp_path / "audit"
    done = run_catdog_in_process("data", "audit", str(data), "--out", str(out))
    assert done.returncode == 0, done.stderr
    page = html.unescape((out / "audit.html").read_text())
    assert "gate puts" not in page and "cat-or-dog" not in page
    assert "3 neither photos not judged: the model's gate tells cats and dogs from the rest, and these photos are " \
           "of bird and rabbit." in page  # fmt: skip
    assert (
        "disagrees with the label.\n1 suspect: 1 answered the other class; the top 1 below, most confident first."
        in page
    )
    assert "unreadable" not in page
    assert "\n1 suspect: 1 answered the other class. Most likely mislabelled:\n  1. " in done.stdout
    result = json.loads(run_catdog_in_process("data", "audit", str(data), "--json").stdout)
    assert result["classes"] == ["bird", "rabbit"] and result["gated"] is False and result["neither_judged"] is False


def test_names_with_square_brackets_are_printed_as_they_are(samples_dir: Path, tmp_path: Path) -> None:
    """The terminal report went through rich markup: a file under a folder named '[' ('[/x].jpg') raised
    MarkupError (a traceback), and '[red]' in a name vanished from the line that named it."""
    data = tmp_path / "data"
    for label in ("cat", "dog"):
        (data / label).mkdir(parents=True)
        for photo in sorted((samples_dir / label).iterdir())[:3]:
            shutil.copy(photo, data / label / photo.name)
    (data / "cat" / "[").mkdir()
    (data / "cat" / "[" / "x].jpg").write_text("not a photo")
    (data / "dog" / "[red]note.jpg").write_text("not a photo")
    # "The image" in a name was replaced by the path, as if the sentence were about bytes: named twice over.
    (data / "dog" / "The image.jpg").write_text("not a photo")
    done = run_catdog_in_process("data", "audit", str(data), "--out", str(tmp_path / "audit"))
    assert done.returncode == 0, done.stderr
    said = done.stdout
    # audit.html, read later, says which folder and which model: it named neither.
    page = (tmp_path / "audit" / "audit.html").read_text()
    assert f"<p>Photos <code>{data}</code>, judged by the features of <code>builtin</code>.</p>" in page, page
    saved = json.loads((tmp_path / "audit" / "suspects.json").read_text())
    assert (saved["data"], saved["model"]) == (str(data), "builtin"), saved
    assert "\n3 unreadable files, left out of the audit:\n" in said, said
    assert f"\n  '{data / 'dog' / 'The image.jpg'}' is not an image" in said, said
    assert f"\n  '{data / 'cat' / '[' / 'x].jpg'}' is not an image" in said, said
    assert f"\n  '{data / 'dog' / '[red]note.jpg'}' is not an image" in said, said
    # Fewer listed than found is said, and how to list them all: "2 suspects ... Most likely mislabelled:" read
    # above one of them as if it were all.
    found = len(json.loads(run_catdog_in_process("data", "audit", str(data), "--json").stdout)["suspects"])
    assert found >= 2
    one = run_catdog_in_process("data", "audit", str(data), "--top", "1").stdout
    assert f". Most likely mislabelled, the top 1 (--top {found} lists all):\n  1. " in one, one
    assert "\n  2. " not in one


def test_the_summary_says_which_kind_each_suspect_is() -> None:
    """ "out-of-fold accuracy 1.0000; 1 disagrees with its label" read as a contradiction: the one was a dog photo the
    gate answers `neither`, which the accuracy (of the cat-or-dog answers) does not count."""
    from catdog.audit import AuditResult, Suspect, accuracy_note, suspects_note

    horse = Suspect("dog/horse.jpg", "dog", "neither", 0.99)
    result = AuditResult(41, ["cat", "dog"], 5, [horse], 1.0)
    assert accuracy_note(result) == (
        "out-of-fold accuracy 100.0% (41 of 41 answered their own class, cat or dog, by a fit on the other folds)"
    )
    assert suspects_note(result) == "1 suspect: 1 answered neither by the gate"
    flipped = [Suspect(f"dog/cat.{i}.jpg", "dog", "cat", 0.9) for i in range(2)]
    stray = Suspect("neither/cat.9.jpg", "neither", "cat", 0.97)
    result = AuditResult(51, ["cat", "dog"], 5, [horse, *flipped, stray], 38 / 41, neither=10)
    assert accuracy_note(result).startswith("out-of-fold accuracy 92.7% (38 of 41 answered")
    assert suspects_note(result) == (
        "4 suspects: 2 answered the other class, 1 answered neither by the gate, "
        "1 labelled neither but answered cat or dog by the gate"
    )
    assert suspects_note(AuditResult(3, ["bird", "fox", "owl"], 2, [], 1.0)) == "No suspects"


def test_an_accuracy_short_of_every_photo_never_reads_100_percent(tmp_path: Path) -> None:
    """ "out-of-fold accuracy 100.0% (4999 of 5000 ...)" read as a contradiction, and a suspect at 99.96% read
    "100.0%", as sure as one the fit had no doubt about."""
    from catdog.audit import AuditResult, Suspect, accuracy_note, write_audit

    assert accuracy_note(AuditResult(5000, ["cat", "dog"], 5, [], 4999 / 5000)).startswith(
        "out-of-fold accuracy 99.98% (4999 of 5000 answered"
    )
    assert accuracy_note(AuditResult(40, ["cat", "dog"], 5, [], 1.0)).startswith("out-of-fold accuracy 100.0% (40 of")
    nearly = Suspect(str(tmp_path / "dog" / "cat.1.jpg"), "dog", "cat", 0.9996)
    page = write_audit(AuditResult(40, ["cat", "dog"], 5, [nearly], 0.975), tmp_path / "out").read_text()
    assert "looks like <b>cat</b> (99.96%)" in page, page


def test_the_cards_the_summary_announces_come_right_below_it(tmp_path: Path) -> None:
    """ "the top 2 below" ended the summary, and the unreadable files came below it, before the cards: 300 of them
    pushed the suspects out of sight."""
    from catdog.audit import AuditResult, Suspect, write_audit

    flipped = Suspect(str(tmp_path / "dog" / "cat.1.jpg"), "dog", "cat", 0.9)
    lost = [{"path": f"cat/{i}.jpg", "error": f"'cat/{i}.jpg' is empty (0 bytes)."} for i in range(300)]
    page = write_audit(AuditResult(40, ["cat", "dog"], 5, [flipped], 0.975, lost), tmp_path / "out").read_text()
    announced = page.index("the top 1 below")
    assert announced < page.index("<figure") < page.index("300 unreadable files, left out of the audit:"), page


def test_control_characters_in_a_name_are_shown_escaped_on_the_page(samples_dir: Path, tmp_path: Path) -> None:
    """A right-to-left override (U+202E) in a file name went raw into audit.html, where the rest of the caption read
    backwards, while the console escaped it: the page now shows it as the console does."""
    from catdog.audit import AuditResult, Suspect, write_audit

    photo = tmp_path / "dog" / "x\u202egnp.jpg"
    photo.parent.mkdir()
    shutil.copy(sorted((samples_dir / "cat").glob("*.jpg"))[0], photo)
    lost = [{"path": "cat/a\u202e.jpg", "error": "'cat/a\u202e\n.jpg' is empty (0 bytes)."}]
    result = AuditResult(40, ["cat", "dog"], 5, [Suspect(str(photo), "dog", "cat", 0.9)], 0.975, lost)
    page = write_audit(result, tmp_path / "out").read_text()
    assert "\u202e" not in page and "\n.jpg" not in page, page
    assert 'alt="x\\u202egnp.jpg"' in page and "#1 x\\u202egnp.jpg<br>" in page, page
    assert "<li>&#x27;cat/a\\u202e\\n.jpg&#x27; is empty (0 bytes).</li>" in page, page


def test_the_audit_page_fits_a_phone_and_follows_a_dark_colour_scheme(samples_dir: Path, tmp_path: Path) -> None:
    """audit.html said no viewport, so a phone drew it 980 px wide and small, and it stayed black on white in a
    dark colour scheme: it now has report.html's viewport and style. In real Chromium as a phone, dark."""
    from catdog.audit import AuditResult, Suspect, write_audit

    photo = tmp_path / "dog" / "cat.1.jpg"
    photo.parent.mkdir()
    shutil.copy(sorted((samples_dir / "cat").glob("*.jpg"))[0], photo)
    report = write_audit(AuditResult(40, ["cat", "dog"], 5, [Suspect(str(photo), "dog", "cat", 0.9)], 0.975), tmp_path)
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 375, "height": 800}, is_mobile=True, color_scheme="dark")
        page.goto(report.as_uri())
        assert page.evaluate("[innerWidth, document.scrollingElement.scrollWidth]") == [375, 375]
        body = page.evaluate("[getComputedStyle(document.body).color, getComputedStyle(document.body).backgroundColor]")
        assert body == ["rgb(232, 232, 232)", "rgb(22, 22, 22)"]
        assert page.evaluate("getComputedStyle(document.querySelector('figure')).width") == "210px"


def test_a_photo_filed_under_two_classes_is_not_judged_by_its_own_copy(
    builtin_model: None, dev_dir: Path, tmp_path: Path
) -> None:
    """A dog photo copied into Cats/ made its dog copy a suspect, "labelled dog, looks like cat (91.8%)": the
    fold that judged it had fitted on its twin labelled cat. Copies share a fold now, so only the cat copy is."""
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(3100, 3112):
            shutil.copy(dev_dir / f"{label}.{i}.jpg", tmp_path / label / f"{label}.{i}.jpg")
    shutil.copy(dev_dir / "dog.3100.jpg", tmp_path / "cat" / "filed twice.jpg")
    done = run_catdog_in_process("data", "audit", str(tmp_path), "--json")
    assert done.returncode == 0, done.stderr
    flagged = {(Path(s["path"]).name, s["suggested"]) for s in json.loads(done.stdout)["suspects"]}
    assert ("dog.3100.jpg", "cat") not in flagged, flagged
    assert ("filed twice.jpg", "dog") in flagged, flagged


def test_a_class_whose_photos_are_all_copies_of_one_is_refused_in_one_sentence(
    builtin_model: None, dev_dir: Path, tmp_path: Path
) -> None:
    """Copies share a fold, so a cat/ of 'a.jpg' and 'a (1).jpg' left the fit that judged them no cat to learn
    from: the audit stopped on "unexpected ValueError: This solver needs samples of at least 2 classes"."""
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
    shutil.copy(dev_dir / "cat.3100.jpg", tmp_path / "cat" / "a.jpg")
    shutil.copy(dev_dir / "cat.3100.jpg", tmp_path / "cat" / "a (1).jpg")
    for i in range(3100, 3104):
        shutil.copy(dev_dir / f"dog.{i}.jpg", tmp_path / "dog" / f"dog.{i}.jpg")
    done = run_catdog_in_process("data", "audit", str(tmp_path))
    said = " ".join(done.stderr.split())
    assert done.returncode == 2, said
    assert "has 2 photos of class 'cat', all copies of one ('" in said, said
    assert "an audit needs at least 2 different photos of each class (add photos)." in said, said
