"""The old home of the ONNX Runtime backend, kept so that scripts importing ``catdog.onnx_backend`` keep working.

The code is in :mod:`catdog.inference.onnx_session`, :mod:`catdog.inference.model_cache` and
:mod:`catdog.inference.onnx_export`; catdog's own modules import from there.
"""

from catdog.inference.model_cache import EXPORT_FORMAT, cached_export, files_key, load_model_fn, torch_source
from catdog.inference.onnx_session import INPUT, _cores, features_fn, onnx_model_fn, read_config, session, set_metadata
from catdog.inference.outputs import softmax

_softmax = softmax
_torch_source = torch_source

__all__ = [
    "EXPORT_FORMAT",
    "INPUT",
    "_cores",
    "_softmax",
    "_torch_source",
    "cached_export",
    "features_fn",
    "files_key",
    "load_model_fn",
    "onnx_model_fn",
    "read_config",
    "session",
    "set_metadata",
]
