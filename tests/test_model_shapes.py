"""A model directory rebuilds the net it was saved from: catnet's stem width comes from its weights.

catnet's stem went from 24 to 32 channels (a width PyTorch's channels-last CPU batch norm handles
16 channels at a time); a model trained with the 24-channel stem must still load, predict the
same, and export. Weights that fit no shape of the architecture are refused with one sentence.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from catdog.models import ModelError, build_model, load_model_dir, save_model_dir
from catdog.models.scratch import CatNet
from catdog.preprocess import Preprocess

from conftest import run_catdog_in_process
from hostile import one_sentence

PRE = Preprocess(image_size=64, crop_pct=1.0, interpolation="bilinear")


def saved(model: torch.nn.Module, architecture: str, out: Path) -> Path:
    config = {"architecture": architecture, "classes": ["cat", "dog"], "preprocess": PRE.to_dict()}
    save_model_dir(model, config, out)
    return out


def trained_looking(model: torch.nn.Module) -> torch.nn.Module:
    """Batch-norm statistics and weights away from their initial values, as after training."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.add_(torch.randn_like(tensor) * 0.05)
                if "running_var" in name:
                    tensor.abs_()
    return model.eval()


def test_a_new_catnet_has_a_32_channel_stem() -> None:
    model = build_model("catnet", 2, pretrained=False)
    assert model.stem[0][0].out_channels == 32
    assert all(m.out_channels % 16 == 0 for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def test_a_catnet_saved_with_the_24_channel_stem_loads_and_predicts_the_same(tmp_path: Path) -> None:
    old = trained_looking(CatNet(2, stem_width=24))
    model, config = load_model_dir(saved(old, "catnet", tmp_path / "old"))
    assert model.stem[0][0].out_channels == 24
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), old(x))


def test_the_24_channel_catnet_predicts_and_exports_from_the_command_line(
    tmp_path: Path, cat_photo: Path, samples_dir: Path
) -> None:
    model_dir = saved(trained_looking(CatNet(2, stem_width=24)), "catnet", tmp_path / "old")
    predicted = run_catdog_in_process("predict", "--model", str(model_dir), str(cat_photo), "--json")
    assert predicted.returncode == 0, predicted.stderr
    assert '"label"' in predicted.stdout
    onnx = tmp_path / "old.onnx"
    exported = run_catdog_in_process("export", str(model_dir), "--out", str(onnx), "--check-data", str(samples_dir))
    assert exported.returncode == 0, exported.stderr
    assert onnx.stat().st_size > 1_000_000


def test_weights_of_other_shapes_are_refused_with_one_sentence(tmp_path: Path) -> None:
    wider = CatNet(2, widths=(64, 96, 192, 384))  # the names of a catnet, the shapes of none
    model_dir = saved(wider, "catnet", tmp_path / "wider")
    with pytest.raises(ModelError) as err:
        load_model_dir(model_dir)
    assert one_sentence(str(err.value), "model.safetensors"), str(err.value)
    assert "catnet" in str(err.value)
