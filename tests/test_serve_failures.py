"""``catdog serve`` when the model itself fails: one JSON sentence with 500, logged once, the server stays up.

The model is a real ONNX file with catdog's metadata whose graph fails for bright photos: its
Gather reads row 5 of a 2-row table when a photo's mean normalised pixel is above 0 (ONNX Runtime
refuses the index). The server's warm-up pass (a black square) succeeds, as real models that fail
only on some inputs do. The same bare ONNX file has no PyTorch model: heat maps answer 501.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import image_bytes
from hostile import one_sentence, unhandled_errors
from serving import Server, error_of, running

IMAGE_SIZE = 32


def failing_onnx(path: Path) -> Path:
    """A two-class model: logits from a 2-row table indexed by (mean pixel > 0) * 5."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from catdog.onnx_backend import INPUT, set_metadata
    from catdog.preprocess import Preprocess

    table = numpy_helper.from_array(np.array([[2.0, 0.0], [0.0, 2.0]], np.float32), "table")
    five = numpy_helper.from_array(np.array(5, np.int64), "five")
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    nodes = [
        helper.make_node("ReduceMean", [INPUT], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Greater", ["mean", "zero"], ["bright"]),
        helper.make_node("Cast", ["bright"], ["bright_int"], to=TensorProto.INT64),
        helper.make_node("Mul", ["bright_int", "five"], ["row"]),
        helper.make_node("Gather", ["table", "row"], ["logits"], axis=0),
    ]
    graph = helper.make_graph(
        nodes,
        "fails-on-bright-photos",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", 3, IMAGE_SIZE, IMAGE_SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        [table, five, zero],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    pre = Preprocess(image_size=IMAGE_SIZE, crop_pct=1.0)
    set_metadata(model, {"classes": ["cat", "dog"], "preprocess": pre.to_dict(), "architecture": "fails-on-bright"})
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def flat(value: int) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (48, 48), (value, value, value)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("failing-model")
    with running("--model", str(failing_onnx(folder / "fails.onnx")), log=folder / "server.log") as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: Server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def test_a_model_that_works_for_dark_photos_answers_them(client: httpx.Client) -> None:
    answer = client.post("/api/v1/predict", files={"file": ("night.png", flat(10), "image/png")})
    assert answer.status_code == 200, answer.text
    assert answer.json()["label"] == "cat"


def test_a_model_failure_is_one_json_sentence_with_500_logged_once(client: httpx.Client, server: Server) -> None:
    answer = client.post("/api/v1/predict", files={"file": ("snow.png", flat(250), "image/png")})
    assert answer.status_code == 500, answer.text
    message = error_of(answer)
    assert one_sentence(message, "snow.png") and "model" in message, message
    log = server.log()
    assert not unhandled_errors(log), log
    assert len([line for line in log.splitlines() if "snow.png" in line]) == 1, log
    # The server stays up and keeps answering the photos its model can handle.
    after = client.post("/api/v1/predict", files={"file": ("night.png", flat(10), "image/png")})
    assert after.status_code == 200, after.text


def test_a_model_failure_in_a_batch_is_one_json_sentence_with_500(client: httpx.Client, server: Server) -> None:
    files = [("files", ("night.png", flat(10), "image/png")), ("files", ("noon.png", flat(240), "image/png"))]
    answer = client.post("/api/v1/predict/batch", files=files)
    assert answer.status_code == 500, answer.text
    assert one_sentence(error_of(answer)), answer.text
    assert not unhandled_errors(server.log()), server.log()


def test_heat_maps_of_a_bare_onnx_file_answer_501(client: httpx.Client) -> None:
    answer = client.post("/api/v1/explain", files={"file": ("cat.jpg", image_bytes(), "image/jpeg")})
    assert answer.status_code == 501, answer.text
    message = error_of(answer)
    assert one_sentence(message) and ".onnx file" in message, message
