"""Dataset layouts, label normalisation, the hash split and the decoded-image cache."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch

from catdog.data import CachedImages, DatasetError, PixelCache, discover, make_loader, normalize_label, prepare
from catdog.data.hashing import HashIndex, file_hash
from catdog.data.split import split_indices
from catdog.preprocess import Preprocess, to_uint8

from conftest import image_bytes


@pytest.mark.parametrize(
    ("raw", "label"),
    [
        ("Cat", "cat"),
        ("cats", "cat"),
        ("Dogs", "dog"),
        ("DOG", "dog"),
        ("fox", "fox"),
        ("Golden Retrievers", "golden_retriever"),
        ("puppies", "puppy"),
        ("grass", "grass"),
        ("Chiens e\u0301leve\u0301s", "chiens_\u00e9lev\u00e9"),  # as a Mac names it (NFD): one class with NFC's
    ],
)
def test_normalize_label(raw, label):
    assert normalize_label(raw) == label


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_flat_kaggle_layout(tmp_path):
    for name in ["cat.1.jpg", "cat.2.jpg", "dog.10.jpg", "Dog.11.JPG"]:
        _write(tmp_path / name, image_bytes())
    (tmp_path / "README.txt").write_text("not a photo")
    ds = discover(tmp_path)
    assert ds.layout == "flat"
    assert ds.classes == ["cat", "dog"]
    assert ds.counts() == {"cat": 2, "dog": 2}


def test_flat_names_a_person_renamed_carry_their_label(tmp_path):
    """Windows renames a batch of photos 'Cat (1).jpg', 'Cat (2).jpg' ..., and a browser names a second download
    'cat.1 (1).jpg': neither read as a label, so a folder of them 'carried no label'. A camera's 'IMG (3).jpg'
    and a browser's 'download (2).jpg' still carry none."""
    for name in ["Cat (1).jpg", "Cat (2).jpg", "dog(1).png", "dog.1 (1).jpg", "IMG (3).jpg", "download (2).jpg"]:
        _write(tmp_path / "PetImages" / name, image_bytes())
    ds = discover(tmp_path)
    assert (ds.layout, ds.counts()) == ("flat", {"cat": 2, "dog": 2})
    assert sorted(p.name for p in ds.left_out) == ["IMG (3).jpg", "download (2).jpg"]


def test_names_a_browser_gives_saved_web_images_carry_no_label(tmp_path):
    """Since a number may stand in brackets, Bing's 'th (1).jpg' and 'OIP (2).jpg' and YouTube's
    'maxresdefault (1).jpg', saved beside cat.1.jpg and dog.1.jpg, were classes 'th', 'oip' and 'maxresdefault'
    of one photo each, and train trained five classes (with a note that each was too small). They carry no
    label, and are left out."""
    web_names = ["OIP (2).jpg", "hqdefault (1).jpg", "maxresdefault (1).jpg", "th (1).jpg"]
    # Canva's designs and an iPhone's photos sent to Windows were classes "untitled_design" and "image_from_io".
    web_names = sorted([*web_names, "Image from iOS (1).jpg", "Untitled design (2).png"])
    for name in ["cat.1.jpg", "dog.1.jpg", *web_names]:
        _write(tmp_path / name, image_bytes())
    ds = discover(tmp_path)
    assert ds.counts() == {"cat": 1, "dog": 1}
    assert sorted(p.name for p in ds.left_out) == web_names


def test_names_phones_and_chat_apps_give_carry_no_label(tmp_path):
    """A Mac's 'Screen Shot ... at 10.00.00.png', WhatsApp's and Signal's saved photos beside cat.1.jpg and
    dog.1.jpg were classes 'screen_shot', 'whatsapp_image', 'signal' ..., and train trained them, as were WeChat's
    'mmexport...' and KakaoTalk's. They carry no label, as 'IMG_0001.jpg' does, and are left out."""
    device_names = [
        "KakaoTalk_20200101_100000000.jpg",
        "PXL_20200101_100000.jpg",
        "Photo on 01-01-2020 at 10.00.jpg",
        "Screen Shot 2020-01-01 at 10.00.00.png",
        "Screenshot_20200101-1000.png",
        "WhatsApp Image 2020-01-01 at 10.00.00.jpeg",
        "mmexport1577836800000.jpg",
        "received_1234567890.jpeg",
        "signal-2020-01-01-100000.jpg",
    ]
    for name in ["cat.1.jpg", "dog.1.jpg", "cat.2.jpg", "dog.2.jpg", *device_names]:
        _write(tmp_path / "pets" / name, image_bytes())
    ds = discover(tmp_path / "pets")
    assert (ds.layout, ds.counts()) == ("flat", {"cat": 2, "dog": 2})
    assert sorted(p.name for p in ds.left_out) == device_names

    from catdog.training.config import TrainConfig
    from catdog.training.recipe import model_classes

    assert model_classes(TrainConfig(data_dir=str(tmp_path / "pets"), out=str(tmp_path / "model"))) == (
        ["cat", "dog"],
        False,
    )


@pytest.mark.timeout(60)
def test_a_long_flat_name_is_read_at_once(tmp_path):
    """Reading a label from 'cat.1_a_a_..._a!.jpg' tried every way to split its words at their underscores: a
    name with 20 of them took 0.3 s, each 2 more 4 times as long, and one of 60 stopped `train` and `data check`
    for ever. It takes as long as the name is long now; what follows the number may be any words, separators
    and brackets ('cat.1 - Copy (2).jpg')."""
    long_name = "cat.1" + "_a" * 60
    for name in [long_name + "!.jpg", long_name + ".jpg", "dog.1 - Copy (2).jpg"]:
        _write(tmp_path / name, image_bytes())
    ds = discover(tmp_path)
    assert ds.counts() == {"cat": 1, "dog": 1}
    assert [p.name for p in ds.left_out] == [long_name + "!.jpg"]


def test_folder_layout_normalises_and_merges_class_names(tmp_path):
    _write(tmp_path / "Cats" / "a.jpg", image_bytes())
    _write(tmp_path / "cat" / "nested" / "b.png", image_bytes("PNG"))
    _write(tmp_path / "Dogs" / "c.jpg", image_bytes())
    _write(tmp_path / "Dogs" / ".hidden.jpg", image_bytes())
    ds = discover(tmp_path)
    assert ds.layout == "folders"
    assert ds.classes == ["cat", "dog"]
    assert ds.counts() == {"cat": 2, "dog": 1}


def test_petimages_layout_and_stray_files(tmp_path):
    _write(tmp_path / "PetImages" / "Cat" / "0.jpg", image_bytes())
    _write(tmp_path / "PetImages" / "Dog" / "0.jpg", image_bytes())
    _write(tmp_path / "PetImages" / "Dog" / "Thumbs.db", b"\x00junk")
    ds = discover(tmp_path)
    assert ds.layout == "petimages"
    assert ds.counts() == {"cat": 1, "dog": 2}  # data check sees the stray file ...
    assert discover(tmp_path, image_files_only=True).counts() == {"cat": 1, "dog": 1}  # ... training does not


def test_images_beside_the_layout_are_listed_as_left_out(tmp_path):
    """Class folders with a few loose photos beside them are still the dataset; nothing is dropped unsaid."""
    folders = tmp_path / "folders"
    for name in ("cat/a.jpg", "cat/b.jpg", "dog/c.jpg", "neither/d.jpg"):
        _write(folders / name, image_bytes())
    for name in ("IMG_1.jpg", "cover.jpg", "banner.png"):  # more loose photos than class folders
        _write(folders / name, image_bytes())
    ds = discover(folders)
    assert ds.layout == "folders" and ds.counts() == {"cat": 2, "dog": 1, "neither": 1}
    assert sorted(p.name for p in ds.left_out) == ["IMG_1.jpg", "banner.png", "cover.jpg"]

    flat = tmp_path / "flat"
    named = ("cat.1.jpg", "cat.2.jpg", "dog.3.jpg", "cat.jpg", "cat_fluffy.jpg", "IMG_0001.jpg", "thumbs/t.jpg")
    for name in (*named, "Other/horse.jpg"):  # a `neither` folder (here by another name) is welcome beside them
        _write(flat / name, image_bytes())
    (flat / "README.txt").write_text("not a photo")
    ds = discover(flat)
    assert ds.layout == "flat" and ds.counts() == {"cat": 2, "dog": 1, "neither": 1}
    left_out = sorted(p.relative_to(flat).as_posix() for p in ds.left_out)
    assert left_out == ["IMG_0001.jpg", "cat.jpg", "cat_fluffy.jpg", "thumbs/t.jpg"]


def test_a_wrapper_folder_around_any_layout_is_looked_into(tmp_path):
    """Kaggle's archive unpacks to dogs-vs-cats/train/cat.1.jpg: pointed at dogs-vs-cats/, discover once found one
    class "train" (and data check said clean); with a neither/ folder beside the photos in train/, only that
    folder, the photos dropped unsaid; and a loose IMG_1.jpg beside wrapped class folders was never listed."""
    kaggle = tmp_path / "dogs-vs-cats"
    for name in ("train/cat.1.jpg", "train/cat.2.jpg", "train/dog.1.jpg", "train/neither/horse.jpg"):
        _write(kaggle / name, image_bytes())
    ds = discover(kaggle)
    assert ds.layout == "flat" and ds.counts() == {"cat": 2, "dog": 1, "neither": 1}

    photos = tmp_path / "photos"
    for name in ("Photos/Cats/a.jpg", "Photos/dogs /b.jpg", "Photos/IMG_0001.jpg"):
        _write(photos / name, image_bytes())
    ds = discover(photos)
    assert ds.layout == "folders" and ds.counts() == {"cat": 1, "dog": 1}
    assert [p.relative_to(photos).as_posix() for p in ds.left_out] == ["Photos/IMG_0001.jpg"]

    # One folder of photos whose names give one label or none is a class folder, as before: evaluate on cats only.
    for name in ("cats_only/cat/cat.1.jpg", "cats_only/cat/cat.2.jpg", "mine/kitten/IMG_1.jpg"):
        _write(tmp_path / name, image_bytes())
    assert discover(tmp_path / "cats_only").counts() == {"cat": 2}
    assert discover(tmp_path / "mine").counts() == {"kitten": 1}


def test_a_wrapper_inside_a_wrapper_is_looked_into(tmp_path):
    """Only the outermost lone folder was looked into: Microsoft's archive unpacked whole
    (kagglecatsanddogs_5340/PetImages/Cat, Dog) was one class "petimage" of cats and dogs together, Kaggle's Cat
    and Dog set (training_set/training_set/cats, dogs) one class "training_set", and train trained on them. A
    lone folder inside a wrapper is looked into when named like one; any other stays a class, with its subfolders
    (x/cats/2019/ is the class cat), whatever its photos' names say (x/cats/ of 'Tom 1.jpg', 'Kitty 2.jpg')."""
    for name in ("ms/kagglecatsanddogs_5340/PetImages/Cat/0.jpg", "ms/kagglecatsanddogs_5340/PetImages/Dog/0.jpg"):
        _write(tmp_path / name, image_bytes())
    _write(tmp_path / "ms/kagglecatsanddogs_5340/readme[1].txt", b"not a photo")
    ds = discover(tmp_path / "ms")
    assert (ds.layout, ds.counts()) == ("petimages", {"cat": 1, "dog": 1})
    assert ds.wrapper == tmp_path / "ms/kagglecatsanddogs_5340/PetImages"
    for name in ("kaggle/training_set/training_set/cats/cat.1.jpg", "kaggle/training_set/training_set/dogs/dog.1.jpg"):
        _write(tmp_path / name, image_bytes())
    assert discover(tmp_path / "kaggle").counts() == {"cat": 1, "dog": 1}
    for name in ("mine/data/train/cat.1.jpg", "mine/data/train/dog.1.jpg"):
        _write(tmp_path / name, image_bytes())
    assert discover(tmp_path / "mine").counts() == {"cat": 1, "dog": 1}
    for name in ("class/x/cats/2019/a.jpg", "class/x/cats/Tom 1.jpg", "class/x/cats/Kitty 2.jpg"):
        _write(tmp_path / name, image_bytes())
    assert discover(tmp_path / "class").counts() == {"cat": 3}

    from catdog.training.config import TrainConfig
    from catdog.training.recipe import model_classes

    assert model_classes(TrainConfig(data_dir=str(tmp_path / "ms"), out=str(tmp_path / "model"))) == (
        ["cat", "dog"],
        False,
    )


def test_a_lone_folder_named_for_a_class_is_that_class_at_the_top_too(tmp_path):
    """Inside a wrapper a lone cats/ was the class cat, but at the top it was looked into: its 'Kitty (1).jpg' and
    'Tom (1).jpg' were classes "kitty" and "tom", its 2019/ and 2020/ classes "2019" and "2020", and an other/
    of 'horse.1.jpg' and 'cow.1.jpg' classes "horse" and "cow", and train trained them. A folder named for cat,
    dog or neither is that class wherever it is; a lone folder of any other name is looked into as before."""
    layouts = {
        "names": (["cats/Kitty (1).jpg", "cats/Tom (1).jpg"], {"cat": 2}),
        "years": (["Cats/2019/a.jpg", "Cats/2020/b.jpg"], {"cat": 2}),
        "negatives": (["Other/horse.1.jpg", "Other/cow.1.jpg"], {"neither": 2}),
    }
    for case, (names, counts) in layouts.items():
        for name in names:
            _write(tmp_path / case / name, image_bytes())
            _write(tmp_path / "wrapped" / case / "x" / name, image_bytes())
        assert discover(tmp_path / case).counts() == counts, case
        assert discover(tmp_path / "wrapped" / case).counts() == counts, case
    for name in ("mydata/cat.1.jpg", "mydata/dog.1.jpg", "mine/Photos/Cats/a.jpg", "mine/Photos/Dogs/b.jpg"):
        _write(tmp_path / name, image_bytes())
    assert discover(tmp_path / "mydata").counts() == {"cat": 1, "dog": 1}
    assert discover(tmp_path / "mine").counts() == {"cat": 1, "dog": 1}

    from catdog.training.config import TrainConfig
    from catdog.training.recipe import model_classes

    with pytest.raises(DatasetError, match=r"has only one class \(cat\); training needs at least two"):
        model_classes(TrainConfig(data_dir=str(tmp_path / "names"), out=str(tmp_path / "model")))


def test_a_lone_cats_folder_of_breeds_is_named_when_training_refuses_it(tmp_path):
    """A lone Cats/ of breed folders, given from the folder above, was trained on as its breeds; it is the one
    class cat now, and train said only that it needs two classes. It also names the folder to give for the
    breeds; a class folder of photos, or of photos and one folder, gets no such hint."""
    for name in ("pets/Cats/siamese/a.jpg", "pets/Cats/persian/b.jpg", "wrapped/x/Cats/siamese/a.jpg"):
        _write(tmp_path / name, image_bytes())
    _write(tmp_path / "wrapped/x/Cats/persian/b.jpg", image_bytes())
    _write(tmp_path / "photos/Cats/a.jpg", image_bytes())
    _write(tmp_path / "photos/Cats/2019/b.jpg", image_bytes())  # given itself, one class "2019": no hint

    from catdog.training.config import TrainConfig
    from catdog.training.recipe import model_classes

    def refusal(data_dir: Path) -> str:
        with pytest.raises(DatasetError) as info:
            model_classes(TrainConfig(data_dir=str(data_dir), out=str(tmp_path / "model")))
        return str(info.value)

    pets = tmp_path / "pets"
    assert refusal(pets) == (
        f"'{pets}' has only one class (cat); training needs at least two, or give '{pets / 'Cats'}' to train on the "
        "folders inside it."
    )
    assert refusal(tmp_path / "wrapped").endswith(
        f"or give '{tmp_path / 'wrapped/x/Cats'}' to train on the folders inside it."
    )
    assert refusal(tmp_path / "photos").endswith("training needs at least two.")
    cfg = TrainConfig(data_dir=str(pets / "Cats"), out=str(tmp_path / "model"))
    assert model_classes(cfg) == (["persian", "siamese"], False)


def test_splits_side_by_side_are_named_not_read_as_classes(tmp_path):
    """Kaggle's Cat and Dog set unpacks to archive/training_set/training_set/{cats,dogs} and
    archive/test_set/test_set/{cats,dogs}: given archive/, discover read two classes, "training_set" and
    "test_set", and train trained a model that answered them; so for an ImageFolder download's train/, val/ and
    test/, and Kaggle's Dogs vs. Cats train/ (cat.1.jpg ...) beside test1/ (unlabelled 1.jpg ...). Folders side by
    side all named like splits, one at least labelled, are splits: one sentence says which to train on."""
    downloads = {
        "archive": ["training_set/training_set/cats", "training_set/training_set/dogs", "test_set/test_set/cats"],
        "data": ["train/cat", "train/dog", "val/cat", "val/dog", "test/cat", "test/dog"],
    }
    for download, folders in downloads.items():
        for folder in folders:
            _write(tmp_path / download / folder / "a.jpg", image_bytes())
    for name in ("dogs-vs-cats/train/cat.1.jpg", "dogs-vs-cats/train/dog.1.jpg", "dogs-vs-cats/test1/1.jpg"):
        _write(tmp_path / name, image_bytes())
    said = {
        "archive": "holds splits (test_set/, training_set/), not classes: train on '{0}/training_set', evaluate "
        "on '{0}/test_set'.",
        "data": "holds splits (test/, train/, val/), not classes: train on '{0}/train', evaluate on '{0}/test' or "
        "'{0}/val'.",
        "dogs-vs-cats": "holds splits (test1/, train/), not classes: train on '{0}/train'.",
    }
    for download, sentence in said.items():
        with pytest.raises(DatasetError) as info:
            discover(tmp_path / download)
        assert str(info.value) == f"'{tmp_path / download}' " + sentence.format(tmp_path / download)
    assert discover(tmp_path / "archive" / "training_set").counts() == {"cat": 1, "dog": 1}
    assert discover(tmp_path / "data" / "test").counts() == {"cat": 1, "dog": 1}
    assert discover(tmp_path / "dogs-vs-cats" / "train").counts() == {"cat": 1, "dog": 1}
    # Folders of other names, or unlabelled photos in folders named like splits, are classes as before.
    for name in ("mine/train/IMG_1.jpg", "mine/test/IMG_2.jpg", "mixed/train/cat/a.jpg", "mixed/fox/b.jpg"):
        _write(tmp_path / name, image_bytes())
    assert discover(tmp_path / "mine").counts() == {"test": 1, "train": 1}
    assert discover(tmp_path / "mixed").counts() == {"fox": 1, "train": 1}

    from catdog.training.config import TrainConfig
    from catdog.training.recipe import model_classes

    with pytest.raises(DatasetError, match=r"holds splits \(test_set/, training_set/\), not classes"):
        model_classes(TrainConfig(data_dir=str(tmp_path / "archive"), out=str(tmp_path / "model")))


def test_a_neither_folder_beside_splits_is_told_where_it_belongs(tmp_path):
    """A neither/ (or other/) put beside Kaggle's training_set/ and test_set/ made them classes again, and train
    trained "training_set" against "test_set"; beside Kaggle's train/ of cat.1.jpg ... and test1/ it made classes
    "train" and "test1". Splits and a neither folder are refused too, in a sentence that says where the neither
    folder goes: among the classes of the folder to train on, which then reads as cats, dogs and neither."""
    for name in (
        "archive/training_set/training_set/cats/a.jpg",
        "archive/training_set/training_set/dogs/a.jpg",
        "archive/test_set/test_set/cats/a.jpg",
        "archive/neither/a.jpg",
        "kaggle/train/cat.1.jpg",
        "kaggle/train/dog.1.jpg",
        "kaggle/test1/1.jpg",
        "kaggle/Other/a.jpg",
    ):
        _write(tmp_path / name, image_bytes())
    archive, kaggle = tmp_path / "archive", tmp_path / "kaggle"
    said = {
        archive: f"'{archive}' holds splits (test_set/, training_set/), not classes: train on "
        f"'{archive}/training_set', evaluate on '{archive}/test_set', and move '{archive}/neither' into "
        f"'{archive}/training_set/training_set'.",
        kaggle: f"'{kaggle}' holds splits (test1/, train/), not classes: train on '{kaggle}/train', and move "
        f"'{kaggle}/Other' into '{kaggle}/train'.",
    }
    for root, sentence in said.items():
        with pytest.raises(DatasetError) as info:
            discover(root)
        assert str(info.value) == sentence
    shutil.move(archive / "neither", archive / "training_set" / "training_set")
    assert discover(archive / "training_set").counts() == {"cat": 1, "dog": 1, "neither": 1}
    # Unlabelled photos in a folder named like a split stay a class beside neither/, as before.
    for name in ("mine/train/IMG_1.jpg", "mine/neither/IMG_2.jpg"):
        _write(tmp_path / name, image_bytes())
    assert discover(tmp_path / "mine").counts() == {"neither": 1, "train": 1}

    from catdog.training.config import TrainConfig
    from catdog.training.recipe import model_classes

    with pytest.raises(DatasetError, match=r"holds splits \(test1/, train/\), not classes"):
        model_classes(TrainConfig(data_dir=str(kaggle), out=str(tmp_path / "model")))


def test_a_lone_training_split_beside_a_neither_folder_is_read(tmp_path):
    """Kaggle's train/ of cat.1.jpg ... with one's own neither/ beside it (or an ImageFolder train/cat, train/dog)
    was refused as "a split, not classes", and told to move neither/ into train/: it can mean nothing but "train
    on train/, and neither/ holds the negatives", and reads so. Beside test/ as well, it stays refused."""
    for name in ("flat/train/cat.1.jpg", "flat/train/dog.1.jpg", "flat/neither/a.jpg"):
        _write(tmp_path / name, image_bytes())
    for name in ("folders/training_set/cats/a.jpg", "folders/training_set/dogs/b.jpg", "folders/Other/c.jpg"):
        _write(tmp_path / name, image_bytes())
    flat, folders = discover(tmp_path / "flat"), discover(tmp_path / "folders")
    assert (flat.layout, flat.wrapper, flat.counts()) == (
        "flat",
        tmp_path / "flat/train",
        {"cat": 1, "dog": 1, "neither": 1},
    )
    assert (folders.layout, folders.counts()) == ("folders", {"cat": 1, "dog": 1, "neither": 1})
    _write(tmp_path / "flat/test/cat.2.jpg", image_bytes())
    with pytest.raises(DatasetError, match=r"holds splits \(test/, train/\), not classes: train on"):
        discover(tmp_path / "flat")


def test_a_wrapper_inside_a_lone_training_split_beside_a_neither_folder_is_looked_into(tmp_path):
    """train/PetImages/Cat, train/PetImages/Dog with neither/ beside train/ read as one class "petimage" (and
    train/data/cat ... as "data"): the split was looked into, but the wrapper inside it no more, as neither/ stood
    beside it. The neither folder is carried along while wrappers are looked into, as a lone folder's are."""
    for name in ("pets/train/PetImages/Cat/a.jpg", "pets/train/PetImages/Dog/b.jpg", "pets/neither/c.jpg"):
        _write(tmp_path / name, image_bytes())
    for name in ("nested/train/train/cat.1.jpg", "nested/train/train/dog.1.jpg", "nested/train/neither/c.jpg"):
        _write(tmp_path / name, image_bytes())
    _write(tmp_path / "nested/Other/d.jpg", image_bytes())
    pets = discover(tmp_path / "pets")
    assert (pets.wrapper, pets.counts()) == (tmp_path / "pets/train/PetImages", {"cat": 1, "dog": 1, "neither": 1})
    # Kaggle's train/train/ with a neither folder beside each train/: both are kept (it was refused).
    assert discover(tmp_path / "nested").counts() == {"cat": 1, "dog": 1, "neither": 2}


def _refusal_of_download(root: Path, *names: str) -> str:
    """What discover says of a ``root`` holding an image at each of ``names``, which it must refuse."""
    for name in names:
        _write(root / name, image_bytes())
    with pytest.raises(DatasetError) as info:
        discover(root)
    return str(info.value)


def test_validation_and_test_splits_alone_are_told_where_to_train(tmp_path):
    """A download of valid/ and test/ only (its train split left out) was told "evaluate on 'test' or 'valid'",
    with nowhere to train. It is told that there is no training split, to train on valid/ and evaluate on test/."""
    root = tmp_path / "download"
    refusal = _refusal_of_download(root, "valid/cat/a.jpg", "valid/dog/b.jpg", "test/cat/c.jpg", "test/dog/d.jpg")
    assert refusal == (
        f"'{root}' holds splits (test/, valid/), not classes, and no training split: train on '{root}/valid', "
        f"evaluate on '{root}/test'."
    )


def test_an_unlabelled_training_split_beside_labelled_ones_is_told_to_be_sorted(tmp_path):
    """A train/ of camera names (IMG_1.jpg, no class folders) beside labelled valid/ and test/ was told "no
    training split", and to train on valid/. train/ is there; what is wrong is that its photos carry no label:
    the sentence says so, and to sort them into class folders and train on it."""
    root = tmp_path / "download"
    refusal = _refusal_of_download(
        root, "train/IMG_1.jpg", "train/IMG_2.jpg", "valid/cat/a.jpg", "valid/dog/b.jpg", "test/cat/c.jpg"
    )
    assert refusal == (
        f"'{root}' holds splits (test/, train/, valid/), not classes, and the photos in '{root}/train' carry no "
        f"label: sort them into class folders (cat/, dog/, neither/) and train on '{root}/train', evaluate on "
        f"'{root}/test' or '{root}/valid'."
    )
    # An empty train/ (or one of notes) holds no photo to sort: it is no training split, and valid/ is trained on.
    shutil.rmtree(root / "train")
    (root / "train").mkdir()
    (root / "train" / "README.txt").write_text("photos to come")
    with pytest.raises(DatasetError, match=rf"not classes, and no training split: train on '{root}/valid',"):
        discover(root)


def test_folders_named_like_dates_are_no_classes(tmp_path):
    """Pictures/2019 and Pictures/2020 (photos sorted by year, as a phone or Google Takeout exports them) were two
    classes, "2019" and "2020", and train trained them. Folders named like years or dates are refused in one
    sentence, as splits are; inside a class folder (cats/2019/) they are that class's, as before."""
    for name in ("Pictures/2019/IMG_1.jpg", "Pictures/2020/IMG_2.jpg", "mixed/cat/a.jpg", "mixed/dog/b.jpg"):
        _write(tmp_path / name, image_bytes())
    _write(tmp_path / "mixed/Photos from 2021/c.jpg", image_bytes())
    for folder, named in ((tmp_path / "Pictures", "2019/ and 2020/"), (tmp_path / "mixed", "Photos from 2021/")):
        with pytest.raises(DatasetError) as info:
            discover(tmp_path / folder.name)
        assert str(info.value) == (
            f"'{folder}' holds folders named like dates ({named}), not classes: sort their photos into folders "
            "named for what they show (cat/, dog/, and neither/ for the rest)."
        )
    for name in ("pets/cats/2019/a.jpg", "pets/dogs/2019-07-14/b.jpg"):
        _write(tmp_path / name, image_bytes())
    assert discover(tmp_path / "pets").counts() == {"cat": 1, "dog": 1}

    from catdog.training.config import TrainConfig
    from catdog.training.recipe import model_classes

    with pytest.raises(DatasetError, match=r"holds folders named like dates \(2019/ and 2020/\), not classes"):
        model_classes(TrainConfig(data_dir=str(tmp_path / "Pictures"), out=str(tmp_path / "model")))


def test_a_takeout_export_of_many_years_is_refused_in_a_short_sentence(tmp_path):
    """A Google Takeout export holds some 20 folders, "Photos from 2003" ... "Photos from 2024", and the refusal
    listed every one. It names three and counts the rest. Months, events and Takeout's other languages ("July 2019",
    "2019-07-14 Beach", "Fotos von 2019", "Photos de 2019") were classes: they are dated too; cat2/ and dog_1/
    stay classes."""
    takeout = tmp_path / "Takeout" / "Google Photos"
    for year in range(2003, 2025):
        _write(takeout / f"Photos from {year}" / "IMG_1.jpg", image_bytes())
    with pytest.raises(DatasetError) as info:
        discover(takeout)
    assert str(info.value).startswith(
        f"'{takeout}' holds folders named like dates (Photos from 2003/, Photos from 2004/, Photos from 2005/ and "
        "19 more), not classes:"
    )
    for year in range(2007, 2025):  # four left: the fourth is named, not counted as "1 more"
        shutil.rmtree(takeout / f"Photos from {year}")
    with pytest.raises(
        DatasetError, match=r"\(Photos from 2003/, Photos from 2004/, Photos from 2005/ and Photos from"
    ):
        discover(takeout)
    _write(tmp_path / "sorted" / "cat" / "a.jpg", image_bytes())
    _refused_as_dates(
        tmp_path / "sorted", ("July 2019", "2019-07-14 Beach", "Fotos von 2019", "Photos de 2019", "Foto's uit 2019")
    )
    for name in ("numbered/cat2/a.jpg", "numbered/dog_1/b.jpg"):
        _write(tmp_path / name, image_bytes())
    assert discover(tmp_path / "numbered").counts() == {"cat2": 1, "dog_1": 1}


def _refused_as_dates(root: Path, names) -> None:
    """Each of ``names``, a folder put beside ``root``'s class folders one at a time, is refused as a date."""
    for dated in names:
        _write(root / dated / "IMG_0001.jpg", image_bytes())
        with pytest.raises(DatasetError, match=rf"holds folders named like dates \({re.escape(dated)}/\), not classes"):
            discover(root)
        shutil.rmtree(root / dated)


def test_months_in_takeout_s_languages_are_dates(tmp_path):
    """Only English months were read as dates: 'Juli 2019/', 'juillet 2019/', 'julio 2019/', 'luglio 2019/' and
    'julho 2019/' (a phone or Takeout set to German, French, Spanish, Dutch, Italian or Portuguese) were classes,
    though 'Fotos von 2019/' and 'July 2019/' were refused. A Mac's decomposed 'März' is the same month. A month's
    name without a year, a number after a name and words after a bare year stay classes."""
    _write(tmp_path / "sorted" / "cat" / "a.jpg", image_bytes())
    months = ("Juli 2019", "juillet 2019", "julio de 2019", "luglio 2019", "julho 2019", "août 2019", "Mrz. 2020")
    _refused_as_dates(
        tmp_path / "sorted", (*months, unicodedata.normalize("NFD", "März 2019"), "mei 2021 Strand", "dic 2018")
    )
    classes = ("mars", "Mai", "julio", "cat2", "2019 cats", "2001_space")
    for number, name in enumerate(classes):
        _write(tmp_path / "kinds" / name / f"{number}.jpg", image_bytes())
    assert len(discover(tmp_path / "kinds").counts()) == len(classes)


def test_day_first_dates_and_a_month_s_name_with_its_day_are_dates(tmp_path):
    """Only ISO dates and a month's name before a year were dates: a European camera roll's '15.07.2019/',
    '15-07-2019/' and '15_07_2019/', America's '07-15-2019/', '14 juillet 2019/', '14. Juli 2019/', 'July 14,
    2019/' and 'Mars_2020/' beside cat/ were classes, and train trained them. A number that is no date, a month's
    name alone and a year before words stay classes."""
    _write(tmp_path / "roll" / "cat" / "a.jpg", image_bytes())
    dated_names = ("15.07.2019", "15-07-2019", "15_07_2019", "07-15-2019", "1.7.2019 Strand", "Mars 2020")
    more = ("Mars_2020", "14 juillet 2019", "14. Juli 2019", "14 de julio de 2019", "July 14, 2019")
    _refused_as_dates(tmp_path / "roll", (*dated_names, *more))
    classes = ("mars", "3", "12", "15.07", "40.07.2019", "101 Dalmatians", "2019 cats")
    for number, name in enumerate(classes):
        _write(tmp_path / "kinds" / name / f"{number}.jpg", image_bytes())
    assert len(discover(tmp_path / "kinds").counts()) == len(classes)


def test_dated_folders_of_class_folders_are_not_told_to_be_sorted(tmp_path):
    """2019/cat/, 2019/dog/, 2020/cat/ ... are sorted by what they show already, but were told to "sort their photos
    into folders named for what they show". They are told to give one of them, or to put each class together."""
    for name in ("roll/2019/cat/a.jpg", "roll/2019/dog/b.jpg", "roll/2020/Cats/c.jpg", "roll/2020/07/d.jpg"):
        _write(tmp_path / name, image_bytes())
    with pytest.raises(DatasetError) as refused:
        discover(tmp_path / "roll")
    assert str(refused.value) == (
        f"'{tmp_path / 'roll'}' holds folders named like dates (2019/ and 2020/), not classes, with class folders in "
        f"them (Cats/, cat/ and dog/): give one of them ('{tmp_path / 'roll' / '2019'}'), or put each class's photos "
        "together in one folder."
    )


def test_a_day_before_a_month_s_name_with_dashes_and_a_numbered_month_are_dates(tmp_path):
    """'14-Jul-2019/' (a day and a month's name joined like the year) and a month with its year in digits
    ('07.2019/', '07-2019/') were classes beside cat/, while 'Jul-2019/' and '14.07.2019/' were dates."""
    _write(tmp_path / "roll" / "cat" / "a.jpg", image_bytes())
    _refused_as_dates(
        tmp_path / "roll", ("14-Jul-2019", "14_juillet_2019", "07.2019", "07-2019", "12_2019 Weihnachten")
    )
    classes = ("13-2019", "7-11", "Jul-14", "14-Jul")
    for number, name in enumerate(classes):
        _write(tmp_path / "kinds" / name / f"{number}.jpg", image_bytes())
    assert len(discover(tmp_path / "kinds").counts()) == len(classes)


def test_the_dated_folder_offered_holds_the_most_class_folders(tmp_path):
    """'give one of them' named the first dated folder by name, '15.07.2020/' holding Dogs/ alone, which has too few
    classes to train; the one offered holds the most class folders."""
    for name in ("roll/15.07.2020/Dogs/a.jpg", "roll/2019/cat/b.jpg", "roll/2019/dog/c.jpg"):
        _write(tmp_path / name, image_bytes())
    with pytest.raises(DatasetError, match=re.escape(f"give one of them ('{tmp_path / 'roll' / '2019'}')")):
        discover(tmp_path / "roll")


def test_a_year_before_a_name_is_a_class(tmp_path):
    """Words after a bare year were read as an event, so '2019 cats/' and '2019 dogs/' (photos sorted by year and
    kind), '2001_space/' or a car's '2012 Tesla Model S/' were refused as dates and told to be named for what they
    show, which they are. An event's words follow a month ('2019-07-14 Beach/', 'July 2019 Beach/'): those stay
    dated."""
    classes = ("2019 cats", "2019 dogs", "2001_space", "2012 Tesla Model S")
    for number, name in enumerate(classes):
        _write(tmp_path / "kinds" / name / f"{number}.jpg", image_bytes())
    assert len(discover(tmp_path / "kinds").counts()) == len(classes)
    for dated in ("2019-07 Paris", "July 2019 Beach"):
        _write(tmp_path / "events" / dated / "a.jpg", image_bytes())
    with pytest.raises(DatasetError, match=r"named like dates \(2019-07 Paris/ and July 2019 Beach/\), not classes"):
        discover(tmp_path / "events")


def test_a_stray_labelled_photo_beside_splits_does_not_make_them_classes(tmp_path):
    """One cat.1.jpg left loose beside Kaggle's training_set/ and test_set/ skipped the refusal of splits, and they
    were classes "training_set" and "test_set" again (the photo left out). The splits are refused whenever the
    folders are the dataset; where loose labelled photos are (Kaggle's flat train beside a test1/), they are."""
    for name in ("training_set/cats/a.jpg", "training_set/dogs/b.jpg", "test_set/cats/c.jpg", "cat.1.jpg"):
        _write(tmp_path / "archive" / name, image_bytes())
    with pytest.raises(DatasetError, match=r"holds splits \(test_set/, training_set/\), not classes: train on"):
        discover(tmp_path / "archive")
    for name in ("cat.1.jpg", "dog.1.jpg", "cat.2.jpg", "test1/1.jpg", "train/cat.3.jpg"):
        _write(tmp_path / "flat" / name, image_bytes())
    ds = discover(tmp_path / "flat")
    assert (ds.layout, ds.counts(), len(ds.left_out)) == ("flat", {"cat": 2, "dog": 1}, 2)


def test_each_folder_is_listed_once(tmp_path, monkeypatch):
    """discover listed the dataset root twice, and a PetImages wrapper twice too: each listing stats every name
    again, and on a flat folder of 23,000 photos it took 1.42 s instead of 1.17 s (2-core EPYC, warm cache).
    A lone class folder inside a wrapper (x/cats/) was listed twice too, to see whether it wraps another
    layout, though only a folder named like a wrapper can."""
    pets, flat, lone = tmp_path / "pets", tmp_path / "flat", tmp_path / "lone"
    for name in ("PetImages/Cat/0.jpg", "PetImages/Dog/0.jpg"):
        _write(pets / name, image_bytes())
    for name in ("cat.1.jpg", "dog.1.jpg"):
        _write(flat / name, image_bytes())
    _write(lone / "x" / "cats" / "cat.1.jpg", image_bytes())
    listed, scandir = [], os.scandir
    monkeypatch.setattr(os, "scandir", lambda folder: (listed.append(Path(folder)), scandir(folder))[1])
    assert discover(pets).layout == "petimages" and discover(flat).layout == "flat"
    assert discover(lone).counts() == {"cat": 1}
    class_folders = [pets / "PetImages" / "Cat", pets / "PetImages" / "Dog"]
    assert listed == [pets, pets / "PetImages", *class_folders, flat, lone, lone / "x", lone / "x" / "cats"]


def test_other_class_names_work(tmp_path):
    for label in ["wolf", "fox", "bear"]:
        _write(tmp_path / label / "x.jpg", image_bytes())
    assert discover(tmp_path).classes == ["bear", "fox", "wolf"]


@pytest.mark.parametrize("setup", ["missing", "empty", "file", "unlabelled"])
def test_bad_dataset_folders_raise_one_sentence(tmp_path, setup):
    root = tmp_path / "data"
    if setup == "empty":
        root.mkdir()
    elif setup == "file":
        root.write_text("x")
    elif setup == "unlabelled":
        _write(root / "123.jpg", image_bytes())
    with pytest.raises(DatasetError) as info:
        discover(root)
    assert str(root) in str(info.value) and "\n" not in str(info.value)


def test_split_is_stable_when_files_are_added():
    rng = np.random.default_rng(0)
    hashes = [rng.bytes(16).hex() for _ in range(2000)]
    labels = [i % 2 for i in range(2000)]
    before = split_indices(hashes[:1500], labels[:1500], val_fraction=0.1, test_fraction=0.1)
    after = split_indices(hashes, labels, val_fraction=0.1, test_fraction=0.1)
    for name in ("train", "val", "test"):
        assert set(before[name]) == {i for i in after[name] if i < 1500}
    # Stratified: each class gets close to its share of val.
    for label in (0, 1):
        share = sum(labels[i] == label for i in after["val"]) / 1000
        assert 0.07 < share < 0.13


def test_split_keeps_duplicates_together_and_validates_tiny_classes():
    hashes = ["a" * 32, "a" * 32, "b" * 32, "e" * 32, "d" * 32]
    labels = [0, 0, 0, 1, 1]
    split = split_indices(hashes, labels, val_fraction=0.1)
    assert (0 in split["val"]) == (1 in split["val"])
    assert {labels[i] for i in split["val"]} == {0, 1}


def test_hash_index_rehashes_changed_files(tmp_path):
    path = _write(tmp_path / "x.jpg", image_bytes())
    index = HashIndex(tmp_path / "cache")
    first = index.hashes([path])[0]
    assert first == file_hash(path)
    _write(path, image_bytes(size=(10, 10)))
    again = HashIndex(tmp_path / "cache").hashes([path])[0]
    assert again != first and again == file_hash(path)


def test_cache_hit_miss_and_invalidation(tmp_path, samples_dir):
    root = tmp_path / "data"
    shutil.copytree(samples_dir, root)
    pre = Preprocess(image_size=64)
    cache_dir = tmp_path / "cache"
    data = prepare(root, pre, cache_dir, workers=2)
    assert len(data.paths) == 40 and not data.unreadable
    cache = PixelCache(cache_dir, pre)
    assert cache.missing(data.hashes) == []
    # The cached pixels are exactly what the one preprocessing path computes.
    i = data.paths.index(root / "cat" / "cat.1.jpg")
    assert np.array_equal(cache.array()[data.rows[i]], to_uint8(data.paths[i], pre))

    # A changed file is a miss and is decoded again; the others are hits.
    changed = root / "cat" / "cat.1.jpg"
    _write(changed, image_bytes(size=(120, 90)))
    new_hash = file_hash(changed)
    assert PixelCache(cache_dir, pre).missing([new_hash, *data.hashes]) == [new_hash]
    data2 = prepare(root, pre, cache_dir, workers=2)
    assert np.array_equal(
        PixelCache(cache_dir, pre).array()[data2.rows[data2.paths.index(changed)]], to_uint8(changed, pre)
    )

    # Another preprocessing setting has its own cache.
    assert PixelCache(cache_dir, Preprocess(image_size=96)).missing(data.hashes) == data.hashes


def test_cache_survives_a_build_killed_mid_chunk(tmp_path, samples_dir):
    """Rows written after the last index commit are ignored, then overwritten on resume."""
    pre = Preprocess(image_size=32)
    data = prepare(samples_dir, pre, tmp_path / "cache", workers=2)
    cache = PixelCache(tmp_path / "cache", pre)
    with open(cache.pixels_file, "ab") as handle:  # a killed build's unindexed partial row
        handle.write(b"\x07" * 1000)
    dropped = data.hashes[-1]
    del cache.rows[dropped]
    cache._save_index()
    cache = PixelCache(tmp_path / "cache", pre)
    cache.build([data.paths[-1]], [dropped])
    assert np.array_equal(cache.array()[cache.rows[dropped]], to_uint8(data.paths[-1], pre))


def test_unreadable_files_are_listed_not_fatal(tmp_path):
    _write(tmp_path / "cat" / "good.jpg", image_bytes())
    _write(tmp_path / "cat" / "bad.jpg", b"<html>nope</html>")
    _write(tmp_path / "dog" / "good.png", image_bytes("PNG"))
    data = prepare(tmp_path, Preprocess(image_size=32), tmp_path / "cache")
    assert len(data.paths) == 2
    assert [p.name for p, _ in data.unreadable] == ["bad.jpg"]
    assert "not an image" in data.unreadable[0][1]


def test_an_older_caches_sentence_names_the_copy_read_not_the_first(tmp_path, samples_dir):
    """An older catdog's pixel cache kept "'<first path>' is ..." for a broken file's content, and a copy of it
    elsewhere was named where the first had been read, for good: such a sentence is decoded again."""
    photo = (samples_dir / "cat" / "cat.1.jpg").read_bytes()
    for label in ("cat", "dog"):
        _write(tmp_path / "data" / label / f"{label}.2.jpg", (samples_dir / label / f"{label}.2.jpg").read_bytes())
    broken = _write(tmp_path / "data" / "cat" / "copy.jpg", photo[: len(photo) // 2])
    pre = Preprocess(image_size=32)
    prepare(tmp_path / "data", pre, tmp_path / "cache")
    index = tmp_path / "cache" / "pixels" / pre.cache_key() / "index.json"
    kept = json.loads(index.read_text())
    [digest] = kept["errors"]
    kept["errors"][digest] = "'/elsewhere/first.jpg' is truncated or corrupt (the file ends before its image does)."
    index.write_text(json.dumps(kept))  # as an older catdog left it
    data = prepare(tmp_path / "data", pre, tmp_path / "cache")
    assert data.unreadable == [(broken, f"'{broken}' is truncated or corrupt (the file ends before its image does).")]


def test_an_unreadable_file_is_named_where_it_is_whatever_its_name(tmp_path, samples_dir):
    """Every "The image" in the cached sentence was replaced by the path, the one inside a name that already held it
    ('cat/The image of Tom.jpg' came out as "'.../cat/'.../The image of Tom.jpg' of Tom.jpg' is ..."), and a copy
    of a broken file elsewhere was named where the first was read (the pixel cache keeps sentences by content)."""
    photo = (samples_dir / "cat" / "cat.1.jpg").read_bytes()
    cut = photo[: len(photo) // 2]
    for path in (tmp_path / "data" / "cat" / "The image of Tom.jpg", tmp_path / "data" / "dog" / "copy.jpg"):
        _write(path, cut)
    for label in ("cat", "dog"):
        shutil.copy(samples_dir / label / f"{label}.2.jpg", tmp_path / "data" / label)
    data = prepare(tmp_path / "data", Preprocess(image_size=32), tmp_path / "cache")
    assert sorted(data.unreadable) == [
        (path, f"'{path}' is truncated or corrupt (the file ends before its image does).")
        for path in (tmp_path / "data" / "cat" / "The image of Tom.jpg", tmp_path / "data" / "dog" / "copy.jpg")
    ]


def test_loader_yields_uint8_batches_with_labels(tmp_path, samples_dir):
    pre = Preprocess(image_size=64)
    data = prepare(samples_dir, pre, tmp_path / "cache")
    split = data.split(val_fraction=0.25)
    loader = make_loader(CachedImages(data, split["train"]), batch_size=8, shuffle=True, workers=2)
    images, labels = next(iter(loader))
    assert images.dtype == torch.uint8 and images.shape[1:] == (3, pre.resize_size, pre.resize_size)
    assert set(labels.tolist()) <= {0, 1}
    assert len(loader.dataset) == len(split["train"]) and len(split["val"]) > 0


def test_a_model_whose_classes_a_mac_spelt_reads_the_same_folder(tmp_path):
    """Labels are composed (NFC) since a folder from a Mac and from elsewhere became one class; a model trained before
    that may name its class 'chiens_e\u0301leve\u0301' (NFD), and its own data folder was "classes the model does
    not know: chiens_élevé"."""
    decomposed, composed_name = "chiens_e\u0301leve\u0301", "chiens_\u00e9lev\u00e9"
    _write(tmp_path / "data" / composed_name / "a.jpg", image_bytes())
    _write(tmp_path / "data" / "chat" / "b.png", image_bytes("PNG"))
    data = prepare(tmp_path / "data", Preprocess(image_size=32), tmp_path / "cache", classes=["chat", decomposed])
    assert {p.parent.name: data.classes[label] for p, label in zip(data.paths, data.labels)} == {
        composed_name: decomposed,
        "chat": "chat",
    }


def test_data_prepared_in_a_models_class_order_keeps_what_was_left_out(tmp_path):
    """prepare(classes=...) rebuilt the Dataset from four of its fields: the photos with no label, the links not
    followed and the wrapper folder were gone. Training always prepares in the model's order, so the model's
    config.json recorded "left_out": [] whatever the folder held."""
    photos = tmp_path / "photos"
    for name in ("Photos/Cats/a.jpg", "Photos/dogs/b.jpg", "Photos/IMG_0001.jpg"):
        _write(photos / name, image_bytes())
    (photos / "Photos" / "link.jpg").symlink_to(photos / "Photos" / "Cats" / "a.jpg")
    found = discover(photos, image_files_only=True)
    assert found.left_out and found.skipped and found.wrapper  # what must survive
    data = prepare(photos, Preprocess(image_size=32), tmp_path / "cache", classes=["dog", "cat"])
    kept = data.dataset
    assert (kept.left_out, kept.skipped, kept.wrapper) == (found.left_out, found.skipped, found.wrapper)
    assert data.classes == ["dog", "cat"]


def test_a_wrapper_folder_of_one_labels_photos_is_looked_into(tmp_path):
    """train/ holding only cat.1.jpg ... (Kaggle's layout with the dogs taken out) was one class "train"; its
    photos are now read by their names as at the top, and training says the data has one class, cat. Only a
    folder named like a split or a container is looked into so: any other is a class folder, its photos with no
    label in their names included."""
    for name in ("cats_only/train/cat.1.jpg", "cats_only/train/cat.2.jpg", "cats_only/train/IMG_3.jpg"):
        _write(tmp_path / name, image_bytes())
    ds = discover(tmp_path / "cats_only")
    assert ds.layout == "flat" and ds.counts() == {"cat": 2}
    assert [p.name for p in ds.left_out] == ["IMG_3.jpg"]  # as at the top: listed, not dropped unsaid
    _write(tmp_path / "dogs_only/Photos/dog.1.jpg", image_bytes())  # a container's name, like a split's
    assert discover(tmp_path / "dogs_only").counts() == {"dog": 1}

    _write(tmp_path / "in_class_folders/train/cat/a.jpg", image_bytes())
    assert discover(tmp_path / "in_class_folders").counts() == {"cat": 1}

    for name in ("named/Cats/cat.1.jpg", "named/Cats/IMG_2.jpg"):
        _write(tmp_path / name, image_bytes())
    ds = discover(tmp_path / "named")
    assert ds.layout == "folders" and ds.counts() == {"cat": 2} and ds.left_out == []
    _write(tmp_path / "negatives/other/horse.1.jpg", image_bytes())
    assert discover(tmp_path / "negatives").counts() == {"neither": 1}
    # Any other lone folder is named for its class, whatever one label its photos' names carry: a dog called Rex,
    # a phone app's names. Read by their names, they were classes "rex" and "whatsapp_image" that no model knows.
    _write(tmp_path / "rex/dogs/Rex 1.jpg", image_bytes())
    _write(tmp_path / "whatsapp/cats/WhatsApp Image 2026-11-01 at 10.11.12.jpeg", image_bytes())
    assert discover(tmp_path / "rex").counts() == {"dog": 1}
    assert discover(tmp_path / "whatsapp").counts() == {"cat": 1}

    from catdog.training.config import TrainConfig
    from catdog.training.recipe import model_classes

    with pytest.raises(DatasetError, match=r"has only one class \(cat\); training needs at least two"):
        model_classes(TrainConfig(data_dir=str(tmp_path / "cats_only"), out=str(tmp_path / "model")))


def test_a_lone_container_folder_of_flat_files_is_read_by_their_names(tmp_path):
    """A lone PetImages/ of flat files (Microsoft's download, its Cat/ and Dog/ emptied into it) was the one class
    "petimage", and training said so. A lone folder named like a container or a split (PetImages, training_set,
    Pictures, samples2), or for both classes (dogs-vs-cats), whose photos' names carry a label is now read by
    those names, as at the top. A class folder stays one class."""
    for name in ("pets/PetImages/cat.1.jpg", "pets/PetImages/cat.2.jpg", "pets/PetImages/IMG_3.jpg"):
        _write(tmp_path / name, image_bytes())
    ds = discover(tmp_path / "pets")
    assert (ds.layout, ds.counts(), ds.wrapper) == ("flat", {"cat": 2}, tmp_path / "pets/PetImages")
    assert [p.name for p in ds.left_out] == ["IMG_3.jpg"]
    for folder in ("dogs-vs-cats", "cats_and_dogs", "training_set", "Pictures", "samples2"):
        _write(tmp_path / folder / folder / "dog.1.jpg", image_bytes())
        assert discover(tmp_path / folder).counts() == {"dog": 1}, folder
    _write(tmp_path / "kittens/cats/cat.1.jpg", image_bytes())  # a class folder, as before: one class
    ds = discover(tmp_path / "kittens")
    assert (ds.layout, ds.counts(), ds.wrapper) == ("folders", {"cat": 1}, None)

    from catdog.training.config import TrainConfig
    from catdog.training.recipe import model_classes

    with pytest.raises(DatasetError, match=r"has only one class \(cat\); training needs at least two"):
        model_classes(TrainConfig(data_dir=str(tmp_path / "pets"), out=str(tmp_path / "model")))
    _write(tmp_path / "pets/PetImages/dog.1.jpg", image_bytes())
    assert model_classes(TrainConfig(data_dir=str(tmp_path / "pets"), out=str(tmp_path / "model"))) == (
        ["cat", "dog"],
        False,
    )


def test_discover_stats_no_name_the_listing_describes(tmp_path, monkeypatch):
    """discover stat-ed each name three to five times (Path.is_symlink, is_dir, is_file, again while walking):
    115,002 stat calls for a flat folder of 23,000 photos, 60,008 for two class folders of 10,000 each. The
    listing (os.scandir) says what each name is, so only the dataset folder itself is stat-ed now."""
    for name in [f"cats/cat/{i}.jpg" for i in range(30)] + [f"cats/dog/{i}.jpg" for i in range(30)]:
        _write(tmp_path / name, b"")
    for i in range(30):
        _write(tmp_path / "flat" / f"cat.{i}.jpg", b"")
        _write(tmp_path / "flat" / f"dog.{i}.jpg", b"")
    stats = []
    for name in ("stat", "lstat"):
        real = getattr(os, name)
        monkeypatch.setattr(
            os, name, lambda *args, real=real, **kwargs: (stats.append(args[0]), real(*args, **kwargs))[1]
        )
    assert discover(tmp_path / "cats").counts() == {"cat": 30, "dog": 30}
    assert discover(tmp_path / "flat").counts() == {"cat": 30, "dog": 30}
    assert len(stats) <= 4, stats[:10]  # exists() and is_dir() of each dataset folder


def test_train_says_when_one_photo_is_filed_under_two_classes(samples_dir, tmp_path):
    """A copy of one photo in cats/ and dogs/ is a label conflict to data check, and train trained on it as both
    without a word. It says so once, names one, and points at data check with a command that pastes whole (the
    path was unquoted: a folder with a space and a quote in its name gave a command that ran on no folder)."""
    import io

    from rich.console import Console

    from catdog.training.batches import prepare_data
    from catdog.training.config import TrainConfig
    from catdog.training.distributed import DistContext
    from catdog.training.progress import Reporter

    data = tmp_path / "Bob's pets"
    shutil.copytree(samples_dir, data)
    shutil.copy(data / "cat" / "cat.3.jpg", data / "dog" / "copy.jpg")
    console = Console(file=io.StringIO(), width=400)
    cfg = TrainConfig(data_dir=str(data), out=str(tmp_path / "model"))
    prepare_data(cfg, Preprocess(image_size=32), tmp_path / "cache", DistContext(), Reporter(console))
    [line] = [line for line in console.file.getvalue().splitlines() if "more than one class" in line]
    assert f"1 photo filed under more than one class, e.g. '{data / 'cat' / 'cat.3.jpg'}' (cat and dog)" in line
    assert shlex.split(line.split("to list them (its --quarantine moves them out): ")[1]) == [
        "catdog",
        "data",
        "check",
        str(data),
    ], line


def test_train_counts_one_link_and_one_left_out_file_in_the_singular(samples_dir, tmp_path):
    """Run on a messy folder with one 'loop -> ..' link, train said "did not read 1 links or folders", and of one
    loose photo beside the class folders "left out 1 image files that carry no label"; the data check command it
    names pastes whole, its folder's space and quote quoted."""
    import io

    from rich.console import Console

    from catdog.training.batches import prepare_data
    from catdog.training.config import TrainConfig
    from catdog.training.distributed import DistContext
    from catdog.training.progress import Reporter

    data = tmp_path / "Bob's pets"
    shutil.copytree(samples_dir, data)
    (data / "dog" / "loop").symlink_to("..")
    shutil.copy(data / "cat" / "cat.3.jpg", data / "loose.jpg")
    console = Console(file=io.StringIO(), width=400)
    cfg = TrainConfig(data_dir=str(data), out=str(tmp_path / "model"))
    prepare_data(cfg, Preprocess(image_size=32), tmp_path / "cache", DistContext(), Reporter(console))
    said = console.file.getvalue()
    assert "did not read 1 link or folder, e.g. " in said, said
    assert "left out 1 image file with no label in the folders layout, e.g. " in said, said
    [typed] = [line.split("to list them: ")[1] for line in said.splitlines() if "left out" in line]
    assert shlex.split(typed) == ["catdog", "data", "check", str(data)], said


def test_a_command_to_type_takes_a_path_as_well_as_a_string(tmp_path: Path) -> None:
    """A caller of the Python API may hand catdog_command a Path; the command still pastes whole."""
    from catdog.fsutil import catdog_command

    folder = tmp_path / "Bob's pets"
    assert shlex.split(catdog_command("data", "check", folder)) == ["catdog", "data", "check", str(folder)]
