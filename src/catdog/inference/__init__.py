"""Inference: a model → :class:`~catdog.inference.predictor.Prediction` s, on ONNX Runtime or PyTorch.

Its modules, bottom to top (each imports only those below it; ``pyproject.toml``'s import-linter
contracts check it): :mod:`~catdog.inference.outputs` and :mod:`~catdog.inference.cores`, then
:mod:`~catdog.inference.onnx_session` (ONNX Runtime sessions and the metadata a file carries),
:mod:`~catdog.inference.onnx_export` (PyTorch → ONNX), :mod:`~catdog.inference.model_cache` (a model
→ a model function, exported once into the user cache), :mod:`~catdog.inference.predictor` (the
:class:`Predictor`) and :mod:`~catdog.inference.sharding` (``torchrun``).

Importing the package imports nothing heavy: torch and timm load only for an export or the PyTorch backend.
"""
