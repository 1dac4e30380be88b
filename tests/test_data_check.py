"""`catdog data check`: planted problems in a copy of the real samples, found and quarantined.

The command runs in this process (run_catdog_in_process), but where a test sets the terminal's width (COLUMNS,
read when a console is made) or kills it: a subprocess each started Python again.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catdog.data.check import PLAN_NAME, check_dataset, near_pairs, summary
from catdog.images import DEFAULT_MAX_BYTES

from conftest import run_catdog, run_catdog_in_process

# What each planted file is, by its path relative to the dataset folder.
UNUSABLE = {"cat/truncated.jpg", "dog/empty.jpg", "cat/readme.jpg"}
EXACT_COPY = "dog/dog.copy.jpg"  # the bytes of cat/cat.3.jpg: a label conflict
RESIZED = "dog/dog.4.small.jpg"  # dog/dog.4.jpg at a third of its size, re-encoded
PNG_AS_JPG = "cat/cat.crop.jpg"  # PNG content, a crop of a sample
CMYK = "dog/dog.cmyk.jpg"  # a CMYK JPEG crop: an unusual mode, only a note
TINY = "cat/cat.tiny.png"  # 24x20 grayscale: tiny and unusual, only notes
# --quarantine moves the unusable files, both copies of the cross-class photo and the small copy.
MOVED = UNUSABLE | {"cat/cat.3.jpg", EXACT_COPY, RESIZED}


def _crop(path: Path, box: tuple[float, float, float, float]) -> Image.Image:
    img = Image.open(path).convert("RGB")
    w, h = img.size
    return img.crop((int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h)))


def _save(img: Image.Image, path: Path, fmt: str, **options) -> None:
    out = io.BytesIO()
    img.save(out, fmt, **options)
    path.write_bytes(out.getvalue())


@pytest.fixture
def planted(tmp_path: Path, samples_dir: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(samples_dir, root)
    cat, dog = root / "cat", root / "dog"
    jpeg = (cat / "cat.2.jpg").read_bytes()
    (cat / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (dog / "empty.jpg").write_bytes(b"")
    (cat / "readme.jpg").write_text("these are my cat photos\n")
    shutil.copyfile(cat / "cat.3.jpg", root / EXACT_COPY)
    original = Image.open(dog / "dog.4.jpg")
    _save(original.resize((original.width // 3, original.height // 3)), root / RESIZED, "JPEG", quality=70)
    _save(_crop(cat / "cat.6.jpg", (0, 0, 0.5, 0.5)), root / PNG_AS_JPG, "PNG")
    _save(_crop(dog / "dog.7.jpg", (0.5, 0.5, 1, 1)).convert("CMYK"), root / CMYK, "JPEG")
    _save(_crop(cat / "cat.8.jpg", (0, 0.5, 0.5, 1)).convert("L").resize((24, 20)), root / TINY, "PNG")
    return root


def _check_json(root: Path, *args: str) -> tuple[int, dict]:
    proc = run_catdog_in_process("data", "check", str(root), "--json", *args)
    assert proc.returncode in (0, 1), proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_clean_samples_exit_0(samples_dir: Path, cache_dir: Path) -> None:
    code, report = _check_json(samples_dir)
    assert code == 0
    assert report["clean"] is True and report["problems"] == 0
    assert report["classes"] == {"cat": 20, "dog": 20} and report["neither"] == 0
    for kind in ("unusable", "duplicates", "near_duplicates", "label_conflicts", "extension_mismatches"):
        assert report[kind] == [], kind
    verdict = rendered(summary(check_dataset(samples_dir, cache_dir=cache_dir))).strip().splitlines()[-1]
    assert verdict.startswith("clean: no unusable files"), verdict  # no notes, so no "apart from the notes"


NEITHER_CAPTION = "neither (examples of what is not a cat or a dog)"


@pytest.mark.parametrize("layout", ["neither/", "other/", "PetImages/Other/", "flat neither.N.jpg"])
def test_neither_photos_are_counted_apart(
    layout: str, samples_dir: Path, data_root: Path, tmp_path: Path, cache_dir: Path
) -> None:
    """Real non-pet photos in a `neither` folder (or its aliases, or named neither.N.jpg) are a count of
    their own, not a third class."""
    non_pets = sorted((data_root / "neither" / "car").glob("*.jpg"))[:3]
    assert len(non_pets) == 3
    root = tmp_path / "data"
    pets = [samples_dir / label / f"{label}.{i}.jpg" for label in ("cat", "dog") for i in (1, 2)]
    if layout.startswith("flat"):
        root.mkdir()
        for src in pets:
            shutil.copy(src, root / src.name)
        for i, src in enumerate(non_pets, 1):
            shutil.copy(src, root / f"neither.{i}.jpg")
    else:
        base = root / "PetImages" if layout.startswith("PetImages") else root
        for src in pets:
            (base / src.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(src, base / src.parent.name / src.name)
        (root / layout).mkdir(parents=True)
        for src in non_pets:
            shutil.copy(src, root / layout / src.name)

    code, report = _check_json(root)
    assert code == 0 and report["clean"] is True
    assert report["classes"] == {"cat": 2, "dog": 2}
    assert report["neither"] == 3 and report["files"] == 7

    text = run_catdog_in_process("data", "check", str(root))
    assert text.returncode == 0, text.stderr
    [row] = [line for line in text.stdout.splitlines() if NEITHER_CAPTION in line]
    assert row.split(NEITHER_CAPTION)[1].strip(" │|") == "3"


def test_a_neither_folder_beside_other_classes_is_said_to_be_unused(data_root: Path, tmp_path: Path) -> None:
    """Beside horse/ and cow/, neither/ was captioned "examples of what is not a cat or a dog" (no model of
    those classes uses it, as `train` says)."""
    root = tmp_path / "farm"
    for name, folder in (("horse", "horse"), ("cow", "cow"), ("neither", "rabbit")):
        (root / name).mkdir(parents=True)
        for src in sorted((data_root / "neither" / folder).iterdir())[:2]:
            shutil.copy(src, root / name / src.name)
    text = run_catdog("data", "check", str(root), "--cache-dir", str(tmp_path / "cache"), env={"COLUMNS": "200"})
    assert "neither (not used: only a cat/dog model learns what is neither)" in text.stdout, text.stdout
    assert NEITHER_CAPTION not in text.stdout


def test_photos_beside_the_class_folders_are_reported_left_out(
    samples_dir: Path, tmp_path: Path, cache_dir: Path
) -> None:
    """Three loose photos beside cat/ and dog/ once made the whole folder a flat layout of one photo, 'clean'."""
    root = tmp_path / "data"
    shutil.copytree(samples_dir, root)
    for name in ("IMG_1.jpg", "cover.jpg", "banner.jpg"):
        shutil.copy(samples_dir / "cat" / "cat.1.jpg", root / name)
    code, report = _check_json(root)
    assert code == 1 and report["layout"] == "folders" and report["classes"] == {"cat": 20, "dog": 20}
    assert sorted(item["path"] for item in report["left_out"]) == ["IMG_1.jpg", "banner.jpg", "cover.jpg"]
    assert report["problems"] == 3 and report["duplicates"] == []  # a copy left out is no duplicate
    text = run_catdog_in_process("data", "check", str(root))
    assert (
        text.returncode == 1
        and "cover.jpg" in text.stdout
        and "3 problems: 3 image files left out (no label)." in text.stdout
    )


def test_links_not_read_are_counted_in_words(samples_dir: Path, tmp_path: Path) -> None:
    """The verdict lost its "(s)" on every noun but this one: "1 link(s) or folder(s) not read"."""
    root = tmp_path / "data"
    shutil.copytree(samples_dir, root)
    (root / "cat" / "elsewhere.jpg").symlink_to(samples_dir / "cat" / "cat.1.jpg")  # links are never followed
    one = rendered(summary(check_dataset(root, cache_dir=tmp_path / "cache")))
    assert "1 problem: 1 link or folder not read." in " ".join(one.split()), one
    (root / "dog" / "album").symlink_to(samples_dir / "dog")
    two = rendered(summary(check_dataset(root, cache_dir=tmp_path / "cache")))
    assert "2 problems: 2 links or folders not read." in " ".join(two.split()), two


def test_odd_file_names_are_shown_as_they_are(samples_dir: Path, tmp_path: Path, cache_dir: Path) -> None:
    """A newline in a name split a table row; '[red]' in a name was taken as the terminal's markup."""
    root = tmp_path / "data"
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    shutil.copy(samples_dir / "cat" / "cat.1.jpg", root / "cat" / "[red]a\nb.jpg")
    shutil.copy(samples_dir / "cat" / "cat.1.jpg", root / "dog" / "c.jpg")
    text = run_catdog("data", "check", str(root), env={"COLUMNS": "200"})
    assert text.returncode == 1 and "cat/[red]a\\nb.jpg, dog/c.jpg" in text.stdout, text.stdout
    # A name that is not UTF-8 (a Latin-1 "é") reads as its byte, not as a surrogate ("\udce9").
    (root / "cat" / "[red]a\nb.jpg").rename(os.fsdecode(bytes(root / "cat") + b"/caf\xe9.jpg"))
    text = run_catdog("data", "check", str(root), env={"COLUMNS": "200"})
    assert "cat/caf\\xe9.jpg, dog/c.jpg" in text.stdout, text.stdout


def test_finds_exactly_the_planted_problems(planted: Path, cache_dir: Path) -> None:
    code, report = _check_json(planted)
    assert code == 1
    assert report["classes"] == {"cat": 24, "dog": 24}

    reasons = {u["path"]: u["reason"] for u in report["unusable"]}
    assert set(reasons) == UNUSABLE
    assert "truncated" in reasons["cat/truncated.jpg"] and "'cat/truncated.jpg'" in reasons["cat/truncated.jpg"]
    assert "empty" in reasons["dog/empty.jpg"]
    assert "not an image" in reasons["cat/readme.jpg"]

    assert report["duplicates"] == [
        {"files": ["cat/cat.3.jpg", EXACT_COPY], "labels": ["cat", "dog"], "conflict": True}
    ]
    [near] = report["near_duplicates"]
    assert near["files"] == ["dog/dog.4.jpg", RESIZED] and near["conflict"] is False
    assert near["distance"] <= report["near_distance"]
    assert report["label_conflicts"] == [{"files": ["cat/cat.3.jpg", EXACT_COPY], "labels": ["cat", "dog"]}]
    assert report["extension_mismatches"] == [
        {
            "path": PNG_AS_JPG,
            "extension": ".jpg",
            "content": "PNG",
            "rename_to": "cat.crop.png",
            "usual_name_taken": None,
        }
    ]
    assert {(m["path"], m["mode"]) for m in report["unusual_modes"]} == {(CMYK, "CMYK"), (TINY, "L")}
    assert report["tiny_images"] == [{"path": TINY, "width": 24, "height": 20}]


def test_quarantine_moves_exactly_those_then_clean(planted: Path, tmp_path: Path, cache_dir: Path) -> None:
    before = _files(planted)
    quarantine = tmp_path / "quarantine"
    code, report = _check_json(planted, "--quarantine", str(quarantine))
    assert code == 1  # problems were found (and moved)
    assert {q["path"] for q in report["quarantined"]} == MOVED

    moved = {k: v for k, v in _files(quarantine).items() if not k.startswith("quarantine-")}
    assert set(moved) == MOVED  # relative paths kept
    after = _files(planted)
    assert set(after) == set(before) - MOVED
    assert all(moved[k] == before[k] and k not in after for k in MOVED)  # moved, not copied or changed
    [record] = quarantine.glob("quarantine-*.json")
    assert {m["path"] for m in json.loads(record.read_text())["moves"]} == MOVED

    # Only the wrong extension is left: it is a problem, but a usable image, so it is not moved.
    again = check_dataset(planted, quarantine_dir=quarantine)
    assert again.problems == 1 and again.quarantined == []
    assert [m["path"] for m in again.extension_mismatches] == [PNG_AS_JPG]
    (planted / PNG_AS_JPG).rename(planted / "cat" / "cat.crop.png")
    clean = check_dataset(planted)
    assert clean.problems == 0
    assert len(clean.unusual_modes) == 2 and len(clean.tiny_images) == 1  # notes only


def test_the_summary_gives_the_quarantine_command_that_moves_what_it_found(
    planted: Path, tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The verdict counted the problems and stopped: nothing told a newcomer that --quarantine moves them out,
    nor that its folder must be outside the dataset. The summary ends with the command, a folder beside the
    dataset's; run as printed it moves those files, and the summary then has no such line."""
    monkeypatch.chdir(tmp_path)
    proc = run_catdog_in_process("data", "check", "data")
    assert proc.returncode == 1
    last = " ".join(proc.stdout.split()).rsplit(" To move ", 1)[-1]
    assert last.startswith(f"the {len(MOVED)} files at fault out of the dataset"), proc.stdout
    command = last.split(": catdog ", 1)[1].split()
    assert command == ["data", "check", "data", "--quarantine", "data-quarantine"]
    moved = run_catdog_in_process(*command)
    assert moved.returncode == 1, moved.stderr  # the wrong extension stays: a usable image, never moved
    assert {path for path in MOVED if (tmp_path / "data-quarantine" / path).is_file()} == MOVED
    assert "To move" not in run_catdog_in_process("data", "check", "data").stdout


def test_the_quarantine_command_keeps_the_near_distance_it_was_given(
    samples_dir: Path, tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The summary's command left out --near-distance: 'data check data --near-distance 20' found near-duplicates
    among the samples and counted "the 5 files at fault", and the command, run as printed, found none and moved
    nothing. It repeats the distance it was given, and moves what it counted."""
    shutil.copytree(samples_dir, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    proc = run_catdog_in_process("data", "check", "data", "--near-distance", "20")
    last = " ".join(proc.stdout.split()).rsplit(" To move the ", 1)[-1]
    claimed, command = int(last.split()[0]), last.split(": catdog ", 1)[1].split()
    assert command == ["data", "check", "data", "--quarantine", "data-quarantine", "--near-distance", "20"], command
    assert run_catdog_in_process(*command).returncode == 1  # the report of what it moved
    moved = [path for path in (tmp_path / "data-quarantine").rglob("*.jpg")]
    assert claimed > 0 and len(moved) == claimed, (moved, claimed)


def test_human_summary_and_bad_arguments(planted: Path, tmp_path: Path, cache_dir: Path) -> None:
    proc = run_catdog_in_process("data", "check", str(planted))
    assert proc.returncode == 1
    for text in ("cat/truncated.jpg", EXACT_COPY, RESIZED, "label conflict", "PNG content named .jpg"):
        assert text in proc.stdout
    # The parts of the count add up to it: a label conflict is one of the duplicate groups, not one more problem.
    verdict = " ".join(proc.stdout.split()).split(" To move ")[0]  # the terminal may wrap it; the hint after
    count = int(verdict.split(" problems: ")[0].split()[-1])
    parts = verdict.split(" problems: ")[1].split(", ")
    numbers = [int(part.split()[0]) for part in parts]
    assert "(1 of them a label conflict)" in verdict and sum(numbers) == count, verdict
    assert "1 near-duplicate group (within 4 bits; 0 a label conflict)" in verdict, verdict
    found = verdict.split(" problems: ")[1]
    assert "(s)" not in found and not found.startswith("0 ") and ", 0 " not in found, verdict  # no kind not found

    missing = run_catdog_in_process("data", "check", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1 and "Traceback" not in missing.stderr
    with pytest.raises(ValueError, match="inside the dataset"):
        check_dataset(planted, quarantine_dir=planted / "cat" / "bad")
    assert not (planted / "cat" / "bad").exists()


def test_a_label_conflict_between_near_duplicates_is_counted_with_them(samples_dir: Path, tmp_path: Path) -> None:
    """A cat photo saved at half size under dog/: the conflict is a near-duplicate pair's, not a duplicate group's
    (the summary once said "0 duplicate group(s) (1 of them a label conflict)")."""
    from PIL import Image

    data = tmp_path / "data"
    for name, source in (
        ("cat/a.jpg", "cat/cat.1.jpg"),
        ("cat/b.jpg", "cat/cat.2.jpg"),
        ("dog/c.jpg", "dog/dog.1.jpg"),
    ):
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(samples_dir / source, data / name)
    with Image.open(samples_dir / "cat" / "cat.1.jpg") as photo:
        photo.resize((photo.width // 2, photo.height // 2)).save(data / "dog" / "a_small.jpg", quality=90)
    done = run_catdog_in_process("data", "check", str(data), "--cache-dir", str(tmp_path / "cache"))
    verdict = " ".join(done.stdout.split())
    assert "1 problem: 1 near-duplicate group (within 4 bits; 1 a label conflict)." in verdict, verdict


def rendered(parts: list) -> str:
    """The summary as a wide terminal prints it."""
    from rich.console import Console

    console = Console(file=io.StringIO(), width=400)
    for part in parts:
        console.print(part)
    return console.file.getvalue()


def test_an_unusable_file_is_named_once_in_its_row(planted: Path, tmp_path: Path) -> None:
    """The table's detail was the --json reason, which names the file: "cat/truncated.jpg | 'cat/truncated.jpg' is
    truncated ...", the path twice in one row (two lines more per file on an 80-column terminal)."""
    text = rendered(summary(check_dataset(planted, cache_dir=tmp_path / "cache")))
    [row] = [line for line in text.splitlines() if "cat/truncated.jpg" in line]
    assert row.count("truncated.jpg") == 1 and "is truncated or corrupt" in row, row


def test_files_of_one_unusual_mode_are_one_row(planted: Path, tmp_path: Path) -> None:
    """Each file of an unusual mode was a row of its own: a download of 25 PNGs with alpha filled 20 rows and
    "... and 5 more" with the same note, above the problems' rows. One row per mode names the first and counts."""
    for number in range(25):
        _save(Image.new("RGBA", (64, 64), (number * 10, 80, 160, 200)), planted / "dog" / f"web.{number}.png", "PNG")
    report = check_dataset(planted, cache_dir=tmp_path / "cache")
    assert len(report.unusual_modes) == 27  # --json still lists every one
    rows = [line for line in rendered(summary(report)).splitlines() if "unusual mode (note)" in line]
    assert len(rows) == 3, rows  # RGB with alpha, CMYK, grayscale
    assert "dog/web.0.png and 24 more" in rows[0] and "RGB with alpha (25 files)" in rows[0], rows


def test_a_file_over_the_size_limit_is_named_from_the_dataset_folder(planted: Path, tmp_path: Path) -> None:
    """data check read files with a sentence of its own, and a file over the size limit kept the path as given:
    "cat/huge.jpg | 'data/cat/huge.jpg' is 70.1 MB ...", the file twice in one row, and a reason in --json that
    named it unlike every other. It reads as every command does, and names the file once, from the folder."""
    with open(planted / "cat" / "huge.jpg", "wb") as huge:
        huge.write((planted / "cat" / "cat.2.jpg").read_bytes())
        huge.truncate(70_000_000)  # sparse: no 70 MB written
    report = check_dataset(planted, cache_dir=tmp_path / "cache")
    [reason] = [u["reason"] for u in report.unusable if u["path"] == "cat/huge.jpg"]
    limit = f"over the {DEFAULT_MAX_BYTES / 1e6:.0f} MB limit"  # the limit may change; the naming is the point
    assert reason == f"'cat/huge.jpg' is 70.0 MB, {limit} for one image.", reason
    [row] = [line for line in rendered(summary(report)).splitlines() if "huge.jpg" in line]
    assert row.count("huge.jpg") == 1 and f"is 70.0 MB, {limit}" in row, row


def test_the_title_counts_the_files_the_table_counts(samples_dir: Path, tmp_path: Path) -> None:
    """A Google Photos export has a .json beside each photo, and Windows a Thumbs.db in each folder: the title
    counted them ("81 files") above classes that add up to 40, the others noted as no images."""
    data = tmp_path / "data"
    shutil.copytree(samples_dir, data)
    photos = sorted(data.rglob("*.jpg"))
    for photo in photos:
        photo.with_name(f"{photo.name}.json").write_text("{}")
    (data / "dog" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    report = check_dataset(data, cache_dir=tmp_path / "cache")
    text = " ".join(rendered(summary(report)).split())  # the title wraps to the table's width
    assert f"(folders layout, {len(photos)} files) " in text, text
    assert sum(report.classes.values()) + report.neither == len(photos)


def test_a_wrong_extension_s_row_says_which_to_give_it(planted: Path, tmp_path: Path) -> None:
    """The row said "PNG content named .jpg" and stopped, though it is a problem (exit status 1): which name to give
    it was left to the reader. It ends with the usual extension of its content; renamed so, the file is clean."""
    text = rendered(summary(check_dataset(planted, cache_dir=tmp_path / "cache")))
    [row] = [line for line in text.splitlines() if PNG_AS_JPG in line]
    assert "PNG content named .jpg: rename it .png" in row, row
    (planted / PNG_AS_JPG).rename((planted / PNG_AS_JPG).with_suffix(".png"))
    assert check_dataset(planted, cache_dir=tmp_path / "cache").extension_mismatches == []


def test_a_class_of_one_photo_is_noted(samples_dir: Path, dev_dir: Path, tmp_path: Path) -> None:
    """A French 'Chats/' folder beside 'Cats/' is a class 'chat' of one photo: data check counted it in the table
    and said nothing more (clean), and train made a model that answers 'chat'."""
    data = tmp_path / "data"
    shutil.copytree(samples_dir / "cat", data / "Cats")
    shutil.copytree(samples_dir / "dog", data / "dogs")
    (data / "Chats").mkdir()
    shutil.copy(dev_dir / "cat.5001.jpg", data / "Chats" / "minou.jpg")
    (data / "Chats" / "Thumbs.db").write_bytes(b"\x00junk")  # sorted first, but no photo to show
    report = check_dataset(data, cache_dir=tmp_path / "cache")
    assert report.small_classes == [
        {"class": "chat", "photos": 1, "example": "Chats/minou.jpg", "files": ["Chats/minou.jpg"]}
    ]
    assert report.problems == 0  # notes only: a test set of a few photos may be meant
    text = rendered(summary(report))
    [row] = [line for line in text.splitlines() if "Chats/minou.jpg" in line]
    assert "small class (note)" in row and "class chat: 1 usable photo, under 10: too few to learn from" in row, row


def test_blank_frames_are_no_near_duplicates(samples_dir: Path, tmp_path: Path) -> None:
    """A picture of one colour has no detail for a perceptual hash (0 or 1 bit set of 64): a black frame under
    cat/ and a white one under dog/ were a near-duplicate pair "1 bits apart", a label conflict, and --quarantine
    moved both. They are noted as blank instead, and two copies of one blank frame are still duplicates."""
    data = tmp_path / "data"
    for name in ("cat/cat.1.jpg", "cat/cat.2.jpg", "dog/dog.1.jpg", "dog/dog.2.jpg"):
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(samples_dir / name, data / name)
    Image.new("RGB", (640, 480), (0, 0, 0)).save(data / "cat" / "lens_cap.png")
    Image.new("RGB", (640, 480), (255, 255, 255)).save(data / "dog" / "overexposed.jpg", quality=90)
    shutil.copy(data / "dog" / "overexposed.jpg", data / "dog" / "overexposed_copy.jpg")
    report = check_dataset(data, cache_dir=tmp_path / "cache")
    assert report.near_duplicates == [] and report.label_conflicts == []
    assert [d["files"] for d in report.duplicates] == [["dog/overexposed.jpg", "dog/overexposed_copy.jpg"]]
    blank = ["cat/lens_cap.png", "dog/overexposed.jpg", "dog/overexposed_copy.jpg"]
    assert [b["path"] for b in report.blank_images] == blank
    text = rendered(summary(report))
    assert "blank image (note)" in text and "one colour, no detail" in text


def test_files_that_are_no_images_are_a_note_apart_as_train_ignores_them(samples_dir: Path, tmp_path: Path) -> None:
    """Google Photos' export puts a .json beside each photo, a phone a .MOV and a .AAE, Windows a Thumbs.db: data
    check called each an unusable file (5,000 of them beside 5,000 photos, the broken photos lost among them),
    counted them in the classes and moved them on --quarantine, while train never reads them and said it skipped
    fewer. They are a note now, one row per extension; a text named .jpg is still unusable, as train says too."""
    from catdog.data import prepare
    from catdog.preprocess import Preprocess

    data = tmp_path / "data"
    for name in ("cat/cat.1.jpg", "cat/cat.2.jpg", "cat/cat.3.jpg", "dog/dog.1.jpg", "dog/dog.2.jpg"):
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(samples_dir / name, data / name)
        (data / f"{name}.json").write_text(json.dumps({"title": Path(name).name, "photoTakenTime": {}}))
    (data / "cat" / "IMG_1.MOV").write_bytes(b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00qt  ")
    (data / "dog" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + bytes(100))
    (data / "dog" / "notes.jpg").write_text("not a photo")
    report = check_dataset(data, cache_dir=tmp_path / "cache")
    assert [u["path"] for u in report.unusable] == ["dog/notes.jpg"] and report.problems == 1
    assert report.classes == {"cat": 3, "dog": 3}  # the photos and the .jpg, as the table always counted them
    assert sorted(item["path"] for item in report.not_images) == sorted(
        [
            f"{name}.json"
            for name in ("cat/cat.1.jpg", "cat/cat.2.jpg", "cat/cat.3.jpg", "dog/dog.1.jpg", "dog/dog.2.jpg")
        ]
        + ["cat/IMG_1.MOV", "dog/Thumbs.db"]
    )
    assert [move.path for move in report.to_quarantine] == ["dog/notes.jpg"]
    rows = [line for line in rendered(summary(report)).splitlines() if "not an image (note)" in line]
    assert len(rows) == 3, rows  # one per extension, the most common first
    assert "cat/cat.1.jpg.json and 4 more" in rows[0] and "5 .json files: not images; no command reads them" in rows[0]
    # What train skips as unusable is what data check calls unusable.
    trained = prepare(data, Preprocess(image_size=32), tmp_path / "cache", workers=1)
    assert [path.name for path, _ in trained.unreadable] == ["notes.jpg"]


def test_a_flat_layouts_sidecars_are_a_note_as_in_class_folders(samples_dir: Path, tmp_path: Path) -> None:
    """Beside a flat layout's 'cat.1.jpg' its Google Photos sidecar 'cat.1.jpg.json' went unsaid, where in a class
    folder it is a note. It is the same note now; a name of no photo's label ('notes.2024.txt') makes no class."""
    data = tmp_path / "data"
    data.mkdir()
    for name in ("cat/cat.1.jpg", "cat/cat.2.jpg", "dog/dog.1.jpg", "dog/dog.2.jpg"):
        shutil.copy(samples_dir / name, data)
        (data / f"{Path(name).name}.json").write_text("{}")
    (data / "notes.2024.txt").write_text("scanned in 2024")
    report = check_dataset(data, cache_dir=tmp_path / "cache")
    assert report.layout == "flat" and report.classes == {"cat": 2, "dog": 2}, report.classes
    assert sorted(item["path"] for item in report.not_images) == [
        "cat.1.jpg.json", "cat.2.jpg.json", "dog.1.jpg.json", "dog.2.jpg.json"
    ]  # fmt: skip
    assert "4 .json files: not images; no command reads them" in rendered(summary(report))


def test_one_file_over_the_few_shown_is_named_not_counted(samples_dir: Path, tmp_path: Path) -> None:
    """Two .json files beside photos were one row "cat/cat.1.jpg.json and 1 more": "1 more" is no shorter than the
    name. The row names both, as the dated-folder sentence names a fourth folder (fsutil.first_few)."""
    data = tmp_path / "data"
    for name in ("cat/cat.1.jpg", "dog/dog.1.jpg"):
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(samples_dir / name, data / name)
        (data / f"{name}.json").write_text("{}")
    report = check_dataset(data, cache_dir=tmp_path / "cache")
    [row] = [line for line in rendered(summary(report)).splitlines() if "not an image (note)" in line]
    assert "cat/cat.1.jpg.json, dog/dog.1.jpg.json" in row and "more" not in row, row


def test_a_large_group_is_shown_in_a_few_names(samples_dir: Path, tmp_path: Path) -> None:
    """Copies of one placeholder photo in every album were one row naming every copy (300 would fill a screen).
    The row names the first 5 and counts the rest; --json keeps every one."""
    data = tmp_path / "data"
    for name in ("cat/cat.1.jpg", "dog/dog.1.jpg"):
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(samples_dir / name, data / name)
    for n in range(12):
        shutil.copy(samples_dir / "dog" / "dog.2.jpg", data / "dog" / f"unavailable{n:02}.jpg")
    report = check_dataset(data, cache_dir=tmp_path / "cache")
    [group] = report.duplicates
    assert len(group["files"]) == 12
    [row] = [line for line in rendered(summary(report)).splitlines() if line.startswith("│ duplicate")]
    assert "dog/unavailable04.jpg and 7 more" in row and "unavailable05" not in row, row


def test_near_copies_of_one_photo_are_one_group(samples_dir: Path, tmp_path: Path) -> None:
    """Five re-encodings of one photo are one near-duplicate group (and one problem), not ten pairs; the
    quarantine keeps the largest of them."""
    from PIL import Image

    data = tmp_path / "data"
    for name in ("cat/cat.2.jpg", "dog/dog.1.jpg", "dog/dog.2.jpg"):
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(samples_dir / name, data / name)
    with Image.open(samples_dir / "cat" / "cat.1.jpg") as photo:
        for n, quality in enumerate((95, 90, 85, 80, 75)):
            photo.resize((photo.width - 8 * n, photo.height - 8 * n)).save(
                data / "cat" / f"burst{n}.jpg", quality=quality
            )
    report = check_dataset(data, cache_dir=tmp_path / "cache")
    [group] = report.near_duplicates
    assert group["files"] == [f"cat/burst{n}.jpg" for n in range(5)] and group["conflict"] is False
    assert 0 < group["distance"] <= report.near_distance
    assert report.problems == 1
    moved = sorted(move.path for move in report.to_quarantine)
    assert moved == [f"cat/burst{n}.jpg" for n in range(1, 5)]  # burst0, the largest, stays
    # Five are not all "N bits apart": a chain joins photos further apart than the pairs that joined them.
    text = rendered(summary(report))
    assert f"each within {group['distance']} bits of another" in text and "bits apart" not in text, text


def test_cache_follows_file_content(planted: Path, tmp_path: Path) -> None:
    cache = tmp_path / "check-cache"
    first = check_dataset(planted, cache_dir=cache)
    assert (cache / "check").is_dir()
    assert check_dataset(planted, cache_dir=cache).to_dict() == first.to_dict()  # served from the cache
    # A file whose content changes is inspected again, not served from the cache.
    good = planted / "dog" / "dog.9.jpg"
    good.write_bytes(good.read_bytes()[:500])
    changed = check_dataset(planted, cache_dir=cache)
    assert {u["path"] for u in changed.unusable} == UNUSABLE | {"dog/dog.9.jpg"}


def test_an_older_catdogs_facts_are_removed_when_the_new_ones_are_written(samples_dir: Path, tmp_path: Path) -> None:
    """facts-v1.json of an older catdog stayed in the cache for good, read by no version; a newer one's stays."""
    from catdog.data.check import FACTS_VERSION

    check = tmp_path / "cache" / "check"
    check.mkdir(parents=True)
    older, newer = check / f"facts-v{FACTS_VERSION - 1}.json", check / f"facts-v{FACTS_VERSION + 1}.json"
    older.write_text("{}")
    newer.write_text("{}")
    done = run_catdog_in_process("data", "check", str(samples_dir), "--cache-dir", str(tmp_path / "cache"))
    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in check.iterdir()) == [f"facts-v{FACTS_VERSION}.json", newer.name]


def test_near_pairs_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, 600, dtype=np.uint64)
    for k in range(0, 40, 4):  # plant close pairs: flip k // 4 bits
        flips = sum(1 << int(b) for b in rng.choice(64, k // 4, replace=False))
        hashes[k + 1] = hashes[k] ^ np.uint64(flips)
    values = [int(h) for h in hashes]
    expected = [
        (i, j, bin(values[i] ^ values[j]).count("1"))
        for i in range(len(values))
        for j in range(i + 1, len(values))
        if bin(values[i] ^ values[j]).count("1") <= 6
    ]
    assert sorted(near_pairs(hashes, 6, block=64)) == expected
    assert len(expected) >= 7  # the planted pairs with 0..6 flipped bits


def test_sigkill_during_quarantine_loses_nothing(samples_dir: Path, tmp_path: Path, cache_dir: Path) -> None:
    """Kill a real quarantine half-way (SIGKILL, no cleanup); every file is in exactly one place, and a
    rerun completes the plan."""
    root, quarantine = tmp_path / "data", tmp_path / "quarantine"
    shutil.copytree(samples_dir, root)
    planted = []
    for i in range(3000):  # many unusable files so that the moves take a while
        rel = f"{'cat' if i % 2 else 'dog'}/junk{i // 100}/note{i}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"not a photo {i}\n")
        planted.append(rel)
    before = _files(root)

    proc = subprocess.Popen(
        [sys.executable, "-m", "catdog", "data", "check", str(root), "--json", "--quarantine", str(quarantine)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Moves go in sorted path order: once the first has happened, kill it in the middle of the rest.
    first_move = quarantine / sorted(planted)[0]
    deadline = time.monotonic() + 120
    while not first_move.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.0005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed, not finished
    assert (quarantine / PLAN_NAME).exists()

    def where(rel: str) -> list[str]:
        return [name for name, base in (("data", root), ("quarantine", quarantine)) if (base / rel).is_file()]

    assert all(len(where(rel)) == 1 for rel in before), "a file was lost or copied"
    report = check_dataset(root, quarantine_dir=quarantine)  # completes the plan, then finds nothing
    assert report.problems == 0
    assert all(where(rel) == ["quarantine"] for rel in planted)
    assert _files(root) == {k: v for k, v in before.items() if k not in set(planted)}
    assert not (quarantine / PLAN_NAME).exists()


def test_a_wrapper_of_one_labels_photos_is_checked_as_that_one_class(samples_dir: Path, tmp_path: Path) -> None:
    """train/ holding only cat photos named cat.N.jpg was checked as one class "train", and nothing said that
    one class cannot be trained on; it is now the class cat, and a sentence says what one class is good for."""
    train = tmp_path / "mydata" / "train"
    train.mkdir(parents=True)
    for src in sorted((samples_dir / "cat").glob("*.jpg"))[:3]:
        shutil.copy(src, train / src.name)
    text = run_catdog_in_process("data", "check", str(tmp_path / "mydata"))
    assert text.returncode == 0, text.stderr
    assert "flat layout in train/, 3 files" in text.stdout and "│ train" not in text.stdout.split("Findings")[0]
    assert text.stdout.rstrip().endswith(
        "One class (cat): enough to evaluate a model on, not to train one (training needs two or more)."
    )


def test_a_neither_folder_beside_a_lone_train_folder_is_in_the_title(
    samples_dir: Path, data_root: Path, tmp_path: Path
) -> None:
    """train/ of cat.N.jpg and dog.N.jpg with neither/ beside it was titled "flat layout in train/", though the
    neither/ photos outside train/ were read too (the table counts them); the title names both folders."""
    train = tmp_path / "mydata" / "train"
    train.mkdir(parents=True)
    for src in [*sorted((samples_dir / "cat").glob("*.jpg"))[:2], *sorted((samples_dir / "dog").glob("*.jpg"))[:2]]:
        shutil.copy(src, train / src.name)
    (tmp_path / "mydata" / "neither").mkdir()
    shutil.copy(data_root / "neither" / "horse" / "inet-n02389026_sorrel.JPEG", tmp_path / "mydata" / "neither")
    text = run_catdog_in_process("data", "check", str(tmp_path / "mydata"))
    assert text.returncode == 0, text.stderr
    assert text.stdout.split("\n", 1)[0].endswith("(flat layout in train/, neither/ beside it, 5 files)"), text.stdout


def test_a_neither_folder_inside_the_split_beside_a_kaggle_train_folder_is_named_whole(
    samples_dir: Path, data_root: Path, tmp_path: Path
) -> None:
    """Kaggle's train/train/ with neither/ beside the inner train/ was titled "train/ beside it": the neither
    folder's first part alone, which names the split the layout is in. The title names train/neither/."""
    inner = tmp_path / "mydata" / "train" / "train"
    inner.mkdir(parents=True)
    for src in [samples_dir / "cat" / "cat.1.jpg", samples_dir / "dog" / "dog.1.jpg"]:
        shutil.copy(src, inner / src.name)
    (tmp_path / "mydata" / "train" / "neither").mkdir()
    shutil.copy(data_root / "neither" / "horse" / "inet-n02389026_sorrel.JPEG", inner.parent / "neither")
    text = run_catdog_in_process("data", "check", str(tmp_path / "mydata"))
    assert text.returncode == 0, text.stderr
    title = text.stdout.split("\n", 1)[0]
    assert title.endswith("(flat layout in train/train/, train/neither/ beside it, 3 files)"), text.stdout


def test_a_lone_petimages_folder_of_flat_files_is_checked_by_their_names(samples_dir: Path, tmp_path: Path) -> None:
    """PetImages/ holding cat.N.jpg files alone (Microsoft's folders emptied into it) was checked as one class
    "petimage"; its photos are now read by their names, and the title says where: the layout in PetImages/."""
    pets = tmp_path / "mydata" / "PetImages"
    pets.mkdir(parents=True)
    for src in sorted((samples_dir / "cat").glob("*.jpg"))[:3]:
        shutil.copy(src, pets / src.name)
    text = run_catdog_in_process("data", "check", str(tmp_path / "mydata"))
    assert text.returncode == 0, text.stderr
    title, rest = text.stdout.split("\n", 1)
    assert title.endswith("(flat layout in PetImages/, 3 files)") and "petimage" not in rest, text.stdout
    assert text.stdout.rstrip().endswith(
        "One class (cat): enough to evaluate a model on, not to train one (training needs two or more)."
    )
    found = json.loads(run_catdog_in_process("data", "check", "--json", str(tmp_path / "mydata")).stdout)
    assert (found["layout"], found["wrapper"], found["classes"]) == ("flat", "PetImages", {"cat": 3})

    # Microsoft's archive unpacked whole: a wrapper in a wrapper, once one class "petimage" of cats and dogs.
    for label in ("Cat", "Dog"):
        folder = tmp_path / "download" / "kagglecatsanddogs_5340" / "PetImages" / label
        folder.mkdir(parents=True)
        for src in sorted((samples_dir / label.lower()).glob("*.jpg"))[:3]:
            shutil.copy(src, folder / src.name)
    found = json.loads(run_catdog_in_process("data", "check", "--json", str(tmp_path / "download")).stdout)
    assert (found["layout"], found["wrapper"]) == ("petimages", "kagglecatsanddogs_5340/PetImages")
    assert found["classes"] == {"cat": 3, "dog": 3}


def test_a_lone_cats_folder_is_checked_as_the_class_cat(samples_dir: Path, tmp_path: Path) -> None:
    """A lone cats/ of 'Kitty (1).jpg' and 'Tom (1).jpg' was checked as classes "kitty" and "tom" (inside a wrapper,
    as the class cat): a folder named for a class is that class."""
    cats = tmp_path / "mydata" / "cats"
    cats.mkdir(parents=True)
    for name, src in zip(("Kitty (1).jpg", "Tom (1).jpg"), sorted((samples_dir / "cat").glob("*.jpg"))):
        shutil.copy(src, cats / name)
    code, found = _check_json(tmp_path / "mydata")
    assert (code, found["layout"], found["wrapper"], found["classes"]) == (0, "folders", None, {"cat": 2})


def test_a_download_of_splits_is_refused_in_a_sentence_naming_the_split(samples_dir: Path, tmp_path: Path) -> None:
    """Kaggle's Cat and Dog archive/ (training_set/training_set/{cats,dogs}, test_set/test_set/{cats,dogs}) was
    checked as classes "training_set" and "test_set", and train trained them. Every command now says which folder
    to use, with a non-zero exit, before anything is read or written."""
    archive = tmp_path / "archive"
    for split in ("training_set", "test_set"):
        for label in ("cat", "dog"):
            folder = archive / split / split / f"{label}s"
            folder.mkdir(parents=True)
            shutil.copy(sorted((samples_dir / label).glob("*.jpg"))[0], folder)
    sentence = (
        f"'{archive}' holds splits (test_set/, training_set/), not classes: train on '{archive}/training_set', "
        f"evaluate on '{archive}/test_set'."
    )
    for command in (("data", "check", str(archive)), ("train", str(archive), "--out", str(tmp_path / "model"))):
        done = run_catdog_in_process(*command)
        assert (done.returncode, done.stdout, done.stderr.strip()) == (2, "", f"error: {sentence}"), command
    assert not (tmp_path / "model").exists()
    code, found = _check_json(archive / "training_set")
    assert (found["wrapper"], found["classes"]) == ("training_set", {"cat": 1, "dog": 1})


def test_json_writes_a_name_that_is_not_utf8_as_valid_utf8(samples_dir: Path, tmp_path: Path) -> None:
    """A file named with a Latin-1 byte came out of `data check --json` as the lone surrogate '\\udcff', which
    strict JSON parsers refuse (predict --json wrote it so too); each such byte is now the text '\\xff', as in
    predict's output and data check's own table."""
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for src in sorted((samples_dir / label).glob("*.jpg"))[:3]:
            shutil.copy(src, tmp_path / label / src.name)
    (tmp_path / "dog" / os.fsdecode(b"br\xffoken.jpg")).write_bytes(b"not a photo")
    done = run_catdog_in_process("data", "check", "--json", str(tmp_path))
    assert done.returncode == 1, done.stderr  # the broken file is a problem
    assert "\\udc" not in done.stdout
    [unusable] = json.loads(done.stdout)["unusable"]
    assert unusable["path"] == "dog/br\\xffoken.jpg"
    assert unusable["reason"].startswith("'dog/br\\xffoken.jpg' is not an image")


def test_one_file_is_counted_as_one_file(tmp_path: Path) -> None:
    """The table's title read "(one-folder-per-class layout, 1 files)" for a folder of one photo."""
    (tmp_path / "cat").mkdir()
    Image.new("RGB", (80, 80), (200, 120, 40)).save(tmp_path / "cat" / "1.jpg")
    done = run_catdog_in_process("data", "check", str(tmp_path))
    assert "1 file)" in done.stdout and "1 files" not in done.stdout, done.stdout


def test_photos_named_for_another_class_than_their_folder_are_noted(tmp_path: Path) -> None:
    """cats/ holding dog.1.jpg and dog.2.jpg beside cat.1.jpg read them as cats without a word. The folder's class
    stays the label, and data check notes how many files of a class are named for another, with one of them. A
    cat.4.jpg among the neither examples is noted too, without calling neither a class (it is none)."""
    rng = np.random.default_rng(0)
    names = (
        "cats/cat.1.jpg",
        "cats/dog.1.jpg",
        "cats/dog.2.jpg",
        "dogs/dog.3.jpg",
        "dogs/Rex 1.jpg",
        "other/cat.4.jpg",
    )
    for name in names:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(tmp_path / name)
    code, found = _check_json(tmp_path)
    assert (code, found["classes"], found["neither"]) == (0, {"cat": 3, "dog": 2}, 1)  # a note: the dataset is clean
    assert found["named_otherwise"] == [
        {"class": "cat", "named": "dog", "photos": 2, "example": "cats/dog.1.jpg"},
        {"class": "neither", "named": "cat", "photos": 1, "example": "other/cat.4.jpg"},
    ]
    lines = rendered(summary(check_dataset(tmp_path))).splitlines()
    rows = [" ".join(line.split()) for line in lines if "named for another" in line]
    assert [row.split("│")[2:4] for row in rows] == [
        [" cats/dog.1.jpg ", " 2 files named like dog in a cat folder: read as cat "],
        [" other/cat.4.jpg ", " 1 file named like cat in a neither folder: read as neither "],
    ], rows


def test_a_file_replaced_under_its_name_is_read_again(samples_dir: Path, tmp_path: Path) -> None:
    """The hashes were remembered by path, size and mtime: a photo overwritten by a broken file of the same size
    whose mtime was kept (cp -p, rsync -t, a restore from a backup) was still "clean" from the cache."""
    data = tmp_path / "data"
    shutil.copytree(samples_dir, data)
    photo = data / "cat" / "cat.2.jpg"
    assert check_dataset(data, cache_dir=tmp_path / "cache").unusable == []
    before = photo.stat()
    broken = photo.read_bytes()[: before.st_size // 2]
    photo.write_bytes(broken + b"\0" * (before.st_size - len(broken)))  # the end of the image overwritten
    os.utime(photo, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert photo.stat().st_size == before.st_size and photo.stat().st_mtime_ns == before.st_mtime_ns
    report = check_dataset(data, cache_dir=tmp_path / "cache")
    assert [u["path"] for u in report.unusable] == ["cat/cat.2.jpg"], report.unusable


def test_a_wrong_extension_s_remedy_never_names_a_file_beside_it(planted: Path, tmp_path: Path) -> None:
    """The row said "rename it .png" though a cat.crop.png was there already: renamed so, one photo overwrote the
    other. The name taken is said, in any case of its extension, and another name asked for."""
    Image.new("RGB", (64, 48), (10, 200, 30)).save(planted / "cat" / "cat.crop.PNG")
    text = rendered(summary(check_dataset(planted, cache_dir=tmp_path / "cache")))
    [row] = [line for line in text.splitlines() if PNG_AS_JPG in line]
    assert "rename it .png" not in row, row
    assert "PNG content named .jpg: give it another .png name ('cat.crop.PNG' is another file)" in row, row


def test_small_classes_are_counted_and_a_few_of_their_photos_named(dev_dir: Path, tmp_path: Path) -> None:
    """The small-class row named one photo of the class, whatever it held; and a camera roll's stray folders were a
    row each, 15 rows of one note. A class's row names its first photos and counts the rest; of more than three
    small classes, one row counts them and names a few."""
    data = tmp_path / "data"
    photos = iter(sorted(dev_dir.glob("cat.*.jpg"))[:30])
    for name, count in (("cat", 12), ("dog", 12), ("Chats", 4)):
        (data / name).mkdir(parents=True)
        for number in range(count):
            shutil.copy(next(photos), data / name / f"{number}.jpg")
    text = rendered(summary(check_dataset(data, cache_dir=tmp_path / "cache")))
    [row] = [line for line in text.splitlines() if "small class (note)" in line]
    assert "Chats/0.jpg, Chats/1.jpg and 2 more" in row and "class chat: 4 usable photos" in row, row
    for name in ("Hund", "Katze", "Maus"):
        (data / name).mkdir()
        shutil.copy(data / "Chats" / "0.jpg", data / name / "a.jpg")
    text = rendered(summary(check_dataset(data, cache_dir=tmp_path / "cache")))
    [row] = [line for line in text.splitlines() if "small class (note)" in line]
    assert "Chats/0.jpg, Hund/a.jpg and 2 more" in row, row
    assert (
        "4 classes of under 10 usable photos, too few to learn from: chat (4), hund (1), katze (1) and maus (1)" in row
    )


def test_an_animated_gif_is_said_to_be_read_by_its_first_frame(samples_dir: Path, tmp_path: Path) -> None:
    """An animated GIF (a cat walking into an empty room) and a multi-page TIFF are used by their first picture
    alone, and nobody said so. A note names each; a phone's JPEG with a depth map after it (MPO) is one photo."""
    data = tmp_path / "data"
    shutil.copytree(samples_dir, data)
    cat = Image.open(samples_dir / "cat" / "cat.1.jpg").convert("RGB")
    frames = [cat.rotate(angle).resize((160, 120)) for angle in (0, 10, 20, 30)]
    frames[0].save(data / "cat" / "walk in.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    frames[0].save(data / "cat" / "scan.tiff", save_all=True, append_images=frames[1:3])
    Image.open(samples_dir / "dog" / "dog.1.jpg").convert("RGB").resize((160, 120)).save(data / "dog" / "still.gif")
    report = check_dataset(data, cache_dir=tmp_path / "cache")
    assert report.several_frames == [
        {"path": "cat/scan.tiff", "format": "TIFF", "frames": 3},
        {"path": "cat/walk in.gif", "format": "GIF", "frames": 4},
    ]
    text = rendered(summary(report))
    [row] = [line for line in text.splitlines() if "several pictures (note)" in line and "walk in.gif" in line]
    assert "several pictures (note)" in row and "an animated GIF of 4 frames: only the first is used" in row, row
    assert "a TIFF of 3 pages: only the first page is used" in text


def test_unusable_files_keep_their_odd_names(samples_dir: Path, tmp_path: Path) -> None:
    """Every reason names its file from the dataset folder, a name with a space, an accent and a quote in it too:
    read errors (the path is in the sentence) and decoding errors (the content's sentence says "The image") alike."""
    data = tmp_path / "data"
    shutil.copytree(samples_dir, data)
    photo = (samples_dir / "cat" / "cat.2.jpg").read_bytes()
    (data / "cat" / "Mon chat é.jpg").write_bytes(photo[: len(photo) // 2])
    (data / "cat" / "vide ü.jpg").write_bytes(b"")
    (data / "cat" / "l'image ß.jpg").write_text("my cat")
    with open(data / "cat" / "énorme 1.jpg", "wb") as huge:
        huge.truncate(70_000_000)  # sparse: no 70 MB written
    reasons = {u["path"]: u["reason"] for u in check_dataset(data, cache_dir=tmp_path / "cache").unusable}
    assert sorted(reasons) == ["cat/Mon chat é.jpg", "cat/l'image ß.jpg", "cat/vide ü.jpg", "cat/énorme 1.jpg"]
    for path, reason in reasons.items():
        assert reason.startswith(f"'{path}' is "), reason


def test_a_panorama_is_said_to_be_seen_by_its_middle(samples_dir: Path, tmp_path: Path) -> None:
    """A phone's panorama (8:1) with the dog at one end was "neither" to the audit's model: every model sees a
    centre square, an eighth of it, and data check said nothing. A note names it; a 16:9 photo is no panorama."""
    data = tmp_path / "data"
    shutil.copytree(samples_dir, data)
    dog = Image.open(samples_dir / "dog" / "dog.1.jpg").convert("RGB")
    pano = Image.new("RGB", (2400, 300), (90, 140, 200))
    pano.paste(dog.resize((300, 300)), (0, 0))
    pano.save(data / "dog" / "PANO_0001.jpg", quality=85)
    dog.resize((320, 180)).save(data / "dog" / "wide.jpg", quality=85)
    report = check_dataset(data, cache_dir=tmp_path / "cache")
    assert report.panoramas == [{"path": "dog/PANO_0001.jpg", "width": 2400, "height": 300}]
    [row] = [line for line in rendered(summary(report)).splitlines() if "panorama (note)" in line]
    assert "dog/PANO_0001.jpg" in row and "2400x300: a model sees at most its middle square, 12% of it" in row, row


def _camera_roll(samples_dir: Path, tmp_path: Path, year: str, name: str) -> tuple[Path, Path]:
    """The sample photos in tmp_path/data, with cat.1.jpg moved into a camera roll's folder 'cat/<year>' as
    ``name``: (the data folder, the roll folder)."""
    data = tmp_path / "data"
    shutil.copytree(samples_dir, data)
    roll = data / "cat" / year
    roll.mkdir()
    shutil.move(data / "cat" / "cat.1.jpg", roll / name)
    return data, roll


def test_the_original_of_a_copy_is_kept_not_the_copy(samples_dir: Path, tmp_path: Path) -> None:
    """'IMG_1000 (1).JPG' sorts before 'IMG_1000.JPG' (a space before a dot), so of a camera roll's photo and its
    second download the copy was kept and the original moved away from its sidecars. The shorter name is kept."""
    data, roll = _camera_roll(samples_dir, tmp_path, "2019", "IMG_1000.JPG")
    (roll / "IMG_1000.AAE").write_text("<plist/>")
    for copy in ("IMG_1000 (1).JPG", "IMG_1000 - Copy.JPG"):
        shutil.copy(roll / "IMG_1000.JPG", roll / copy)
    moves = {move.path for move in check_dataset(data, cache_dir=tmp_path / "cache").to_quarantine}
    assert moves == {"cat/2019/IMG_1000 (1).JPG", "cat/2019/IMG_1000 - Copy.JPG"}, moves


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_the_colour_photo_is_kept_not_its_black_and_white_edit(samples_dir: Path, tmp_path: Path, mode: str) -> None:
    """A black-and-white edit saved as a new photo ('IMG_0999.JPG', as large as its original) is a near-duplicate
    of it; of the two, the first path was kept, so the quarantine moved the colour original away. A phone saves
    the edit in colour (mode RGB, every pixel grey), which a test of the mode alone kept over the original."""
    data, roll = _camera_roll(samples_dir, tmp_path, "2021", "IMG_1003.JPG")
    Image.open(roll / "IMG_1003.JPG").convert("L").convert(mode).save(roll / "IMG_0999.JPG", quality=95)
    moves = {move.path for move in check_dataset(data, cache_dir=tmp_path / "cache").to_quarantine}
    assert moves == {"cat/2021/IMG_0999.JPG"}, moves


def test_an_extension_typed_after_the_right_one_is_told_to_go(planted: Path, tmp_path: Path) -> None:
    """'IMG_1.heic.jpg' (a HEIC photo given .jpg, hoping to convert it) was told "rename it .heic", which makes
    'IMG_1.heic.heic'. The remedy names the file without the extension added."""
    Image.new("RGB", (64, 48), (10, 200, 30)).save(planted / "cat" / "IMG_1.png.jpg", "PNG")
    report = check_dataset(planted, cache_dir=tmp_path / "cache")
    [found] = [m for m in report.extension_mismatches if m["path"] == "cat/IMG_1.png.jpg"]
    assert found["rename_to"] == "IMG_1.png"
    [row] = [line for line in rendered(summary(report)).splitlines() if "wrong extension" in line and "IMG_1" in line]
    assert "PNG content named .jpg: rename it IMG_1.png (without .jpg)" in row, row


def test_camera_raw_photos_are_not_called_no_images(samples_dir: Path, tmp_path: Path) -> None:
    """A camera roll's .DNG and .CR2 beside its JPEGs were "not images; no command reads them", as a .json sidecar
    is: they are photos, which train leaves out. The note says so, what reads them, and what to do."""
    data = tmp_path / "data"
    shutil.copytree(samples_dir, data)
    for name in ("IMG_2.dng", "IMG_3.CR2"):
        (data / "cat" / name).write_bytes(b"II*\x00\x08\x00\x00\x00" + bytes(64))  # a TIFF header, as raw files have
    # Pillow reads a DNG's first picture, a TIFF thumbnail: it was a photo "named .dng: rename it .tif".
    Image.open(samples_dir / "cat" / "cat.1.jpg").resize((256, 171)).save(data / "cat" / "IMG_1.DNG", "TIFF")
    (data / "cat" / "IMG_1.json").write_text("{}")
    report = check_dataset(data, cache_dir=tmp_path / "cache")
    assert report.extension_mismatches == [] and report.classes == {"cat": 20, "dog": 20}
    text = rendered(summary(report))
    # "which no command reads" was not so: predict, given a DNG by name, answers from its small preview, and so
    # does serve's API (curl -F file=@IMG_1.DNG .../api/v1/predict: "cat").
    read = (
        "train, evaluate and audit leave out (predict and serve read only the small preview some hold): export as JPEG"
    )
    assert f"2 .dng files: camera raw photos, which {read}" in text, text
    assert f"1 .cr2 file: a camera raw photo, which {read}" in text, text
    # Their row was "not an image (note)", beside "a camera raw photo"; the .json's is still one.
    kinds = {" ".join(line.split("│")[1].split()): line for line in text.splitlines() if "│" in line and "." in line}
    assert [k for k, line in kinds.items() if "camera raw" in line] == ["camera raw photo (note)"], text
    assert [k for k, line in kinds.items() if ".json" in line] == ["not an image (note)"], text
    predicted = run_catdog_in_process("predict", str(data / "cat" / "IMG_1.DNG"), "--json")
    assert json.loads(predicted.stdout)[0]["label"] == "cat", predicted.stdout
    assert "1 .json file: not an image; no command reads it" in text, text
    assert "cat/IMG_1.DNG, cat/IMG_2.dng" in text, text
    # Right under "which train, evaluate and audit leave out", a bare "clean:" read as a contradiction.
    assert text.rstrip().endswith(
        "clean apart from the notes above: no unusable files, duplicates, wrong extensions or "
        "files left out or not read."
    ), text


def test_a_shorter_name_alone_does_not_make_an_original(samples_dir: Path, tmp_path: Path) -> None:
    """The shortest name was kept of any group, so of a camera's 'IMG_1002.JPG' and its re-save as 'anim.gif' (the
    same picture, near-duplicates) the camera's JPEG was moved away from its sidecar. Only a name made from another's
    ('IMG_1002 (1).JPG') says which is the copy; between other names the first path is kept, as before."""
    data, roll = _camera_roll(samples_dir, tmp_path, "2020", "IMG_1002.JPG")
    (roll / "IMG_1002.JPG.json").write_text("{}")
    shutil.copy(roll / "IMG_1002.JPG", roll / "IMG_1002 (1).JPG")
    Image.open(roll / "IMG_1002.JPG").save(roll / "anim.gif")
    moves = {move.path for move in check_dataset(data, cache_dir=tmp_path / "cache").to_quarantine}
    assert moves == {"cat/2020/IMG_1002 (1).JPG", "cat/2020/anim.gif"}, moves


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow's, on the TIFFs cut short: expected here
def test_a_damaged_animation_does_not_stop_the_check(samples_dir: Path, tmp_path: Path) -> None:
    """Counting an animation's frames reads past its first: a GIF or multi-page TIFF cut or damaged after its first
    frame raised IndexError or TypeError out of the count, and one such file stopped the whole data check."""
    data = tmp_path / "data"
    shutil.copytree(samples_dir, data)
    frames = [Image.new("RGB", (64, 64), (40 * i, 90, 200 - 40 * i)) for i in range(4)]
    damaged = 0
    for kind in ("GIF", "TIFF"):
        buffer = io.BytesIO()
        frames[0].save(buffer, kind, save_all=True, append_images=frames[1:])
        whole = buffer.getvalue()
        for cut in range(len(whole) // 4, len(whole), len(whole) // 40):
            (data / "cat" / f"cut {cut}.{kind.lower()}").write_bytes(whole[:cut])
            flipped = whole[:cut] + bytes([whole[cut] ^ 0xFF]) + whole[cut + 1 :]
            (data / "cat" / f"flipped {cut}.{kind.lower()}").write_bytes(flipped)
            damaged += 2
    report = check_dataset(data, cache_dir=tmp_path / "cache")
    assert report.files == 40 + damaged
    assert all(u["reason"].startswith(f"'{u['path']}' ") for u in report.unusable), report.unusable


def test_a_taken_name_is_no_rename_to(planted: Path, tmp_path: Path) -> None:
    """--json gave 'cat.crop.png' as rename_to though a cat.crop.PNG was beside it: a script renaming by it lost that
    photo. A taken name is only usual_name_taken."""
    Image.new("RGB", (64, 48), (10, 200, 30)).save(planted / "cat" / "cat.crop.PNG")
    report = check_dataset(planted, cache_dir=tmp_path / "cache")
    [found] = [m for m in report.extension_mismatches if m["path"] == PNG_AS_JPG]
    assert (found["rename_to"], found["usual_name_taken"]) == (None, "cat.crop.PNG"), found


def test_a_folder_is_listed_once_for_all_its_wrong_extensions(
    samples_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether a wrong extension's new name is taken listed the folder again for each file: 11 s for a folder of
    5,000 JPEGs named .heic (an iPhone's export), growing with the square of their number."""
    data = tmp_path / "data"
    shutil.copytree(samples_dir, data)
    for photo in sorted((data / "cat").iterdir())[:15]:
        photo.rename(photo.with_suffix(".heic"))
    listed_folders = []
    real_listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda folder=".": listed_folders.append(Path(folder)) or real_listdir(folder))
    report = check_dataset(data, cache_dir=tmp_path / "cache")
    assert len(report.extension_mismatches) == 15
    assert listed_folders.count(data / "cat") <= 1, listed_folders


def test_the_frames_of_a_long_animation_are_counted_to_a_limit(samples_dir: Path, tmp_path: Path) -> None:
    """Every frame of an animated GIF was counted, and 64 MB of one-pixel frames is millions of them: one hostile
    file held the check for seconds. Counting stops at FRAMES_COUNTED, and the note says "at least"."""
    from catdog.images import FRAMES_COUNTED, read_info

    data = tmp_path / "data"
    shutil.copytree(samples_dir, data)
    frames = [Image.new("RGB", (1, 1), (i % 256, i // 256, 0)) for i in range(FRAMES_COUNTED + 500)]
    frames[0].save(data / "cat" / "long.gif", save_all=True, append_images=frames[1:], duration=10)
    with Image.open(data / "cat" / "long.gif") as gif:
        assert gif.n_frames == FRAMES_COUNTED + 500  # the file holds more than are counted
    assert read_info(data / "cat" / "long.gif").frames == FRAMES_COUNTED
    report = check_dataset(data, cache_dir=tmp_path / "cache")
    assert report.several_frames == [{"path": "cat/long.gif", "format": "GIF", "frames": FRAMES_COUNTED}]
    text = rendered(summary(report))
    assert f"an animated GIF of at least {FRAMES_COUNTED:,} frames: only the first is used" in text, text


def test_a_photo_saved_again_is_said_to_be_the_same_picture(samples_dir: Path, tmp_path: Path) -> None:
    """A photo saved as PNG, BMP and TIFF, hashes equal, was "each within 0 bits of another", a measure where there
    is none to take; and a pair one bit apart was "1 bits apart". A grey copy hashes equal too: equal hashes are
    not said to be a file "saved again" alone (an edit, as the grey one, is no copy saved again)."""
    from catdog.data.check import _apart

    data = tmp_path / "data"
    shutil.copytree(samples_dir, data)
    with Image.open(data / "cat" / "cat.1.jpg") as photo:
        for kind in ("png", "bmp", "tiff"):
            photo.save(data / "cat" / f"again.{kind}")
        photo.convert("L").save(data / "cat" / "grey.png")
    (data / "cat" / "cat.1.jpg").unlink()  # decoded in draft mode, its hash is a bit or two off theirs
    report = check_dataset(data, cache_dir=tmp_path / "cache")
    [group] = report.near_duplicates
    assert group["distance"] == 0 and len(group["files"]) == 4, group
    assert _apart(group) == "equal perceptual hashes: the same picture saved again or edited", group
    text = rendered(summary(report))
    [row] = [line for line in text.splitlines() if line.startswith("│ near-duplicate")]
    assert "equal perceptual" in row and "0 bits" not in text, text
    assert _apart({"files": ["a.jpg", "b.jpg"], "distance": 1}) == "1 bit apart"
