"""edge-had: onboard hyperspectral anomaly detection.

Importing the package needs numpy only; torch, ONNX Runtime, TensorRT and pycuda are imported
lazily by the modules that use them.
"""

__version__ = "0.1.0"

from edge_had.errors import EdgeHadError, SceneError

__all__ = ["EdgeHadError", "SceneError", "__version__"]
