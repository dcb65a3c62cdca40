"""Runner over an :class:`~edge_had.models.enhancer.EnhancementModel` in torch (CPU or CUDA).

FP32 runs the model as is. FP16 (CUDA only) mirrors the exported FP16 graph: the adapter and
the fusion run FP32 (RX needs ``x_k`` at full precision), the two networks run under
``torch.autocast(float16)``; inputs and outputs are float32 either way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_had.runtime.base import BackendError, Runner


class TorchRunner(Runner):
    backend = "torch"

    def __init__(self, model: Any, precision: str = "fp32", device: str = "cpu") -> None:
        super().__init__(precision)
        if precision == "int8":
            raise BackendError(
                "torch runs fp32 or fp16; INT8 runs from a Q/DQ ONNX (onnxruntime or tensorrt)"
            )
        if precision == "fp16" and not device.startswith("cuda"):
            raise BackendError("torch FP16 needs a CUDA device; on a CPU use fp32")
        self.model = model
        self.device = device
        self.output_names = tuple(model.output_names)

    def activate_impl(self) -> None:
        import torch

        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendError(f"torch on {self.device}: CUDA is not available")
        self.model = self.model.to(self.device).eval()

    def host_array(self, shape: tuple[int, ...]) -> np.ndarray:
        """On a CUDA device, page-locked (pinned) memory: one stream block (224 x 22 x 1024
        float32, 20 MB) uploads in 0.38-0.45 ms on an H100 instead of 1.8 ms from pageable memory
        (bench/GPU.md, the profile). The array keeps its tensor alive."""
        import torch

        if not (self.device.startswith("cuda") and torch.cuda.is_available()):
            return super().host_array(shape)
        return torch.zeros(shape, dtype=torch.float32, pin_memory=True).numpy()

    def infer_impl(self, feed: dict[str, np.ndarray], outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        import torch

        (input_name,) = self.model.input_names
        # from pinned memory the upload is asynchronous; the outputs' copy back below waits for
        # it, so the caller may write the feed again once infer returns
        cube = torch.from_numpy(feed[input_name]).to(self.device, non_blocking=True)
        computed = run_on_device(self.model, cube, self.precision)
        return {name: computed[name].float().cpu().numpy() for name in outputs}

    def infer_adapter(self, cube: np.ndarray) -> dict[str, np.ndarray]:
        """``x_k`` of a bands-first normalised float32 cube: the adapter alone, as
        :meth:`infer_spectral` runs it."""
        return self.infer_spectral(cube, spectral=False)

    def infer_spectral(self, cube: np.ndarray, spectral: bool = True) -> dict[str, np.ndarray]:
        """``x_k`` and ``f_spe`` of a bands-first normalised float32 cube: the adapter and the
        spectral network alone, as :func:`run_on_device` runs them (the spatial student, which
        pools the whole image, is left out: a band of lines cannot give its output); ``x_k``
        alone without ``spectral``."""
        import torch

        self.require_active("infer_spectral()")  # (after deactivate the model is back on the CPU)
        with torch.no_grad():
            x_k = self.model.adapter(torch.from_numpy(cube).to(self.device))
            outputs = {"x_k": x_k.cpu().numpy()}
            if spectral:
                outputs["f_spe"] = network_on_device(self.model.spectral, x_k, self.precision).cpu().numpy()
            return outputs

    def infer_spatial(self, x_k: np.ndarray) -> np.ndarray:
        """``f_spa`` of a bands-first float32 ``x_k``: the spatial student alone, as
        :func:`run_on_device` runs it (zeros without one)."""
        import torch

        self.require_active("infer_spatial()")
        with torch.no_grad():
            x_k_tensor = torch.from_numpy(x_k).to(self.device)
            return network_on_device(self.model.spatial, x_k_tensor, self.precision).cpu().numpy()

    def free_working_memory(self) -> None:
        """On a CUDA device, the caching allocator's unused blocks (on the CPU, freed tensors go
        back to malloc)."""
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def deactivate_impl(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            self.model = self.model.to("cpu")
            torch.cuda.empty_cache()


def run_on_device(model: Any, cube: Any, precision: str) -> dict[str, Any]:
    """Every output of ``model`` on the tensor ``cube``, left where it was computed: FP32 as is,
    FP16 with the two networks under ``torch.autocast(float16)`` (see the module docstring)."""
    import torch

    with torch.no_grad():
        if precision == "fp32":
            return dict(model(cube)._asdict())
        x_k = model.adapter(cube)
        f_spe = network_on_device(model.spectral, x_k, precision)
        f_spa = network_on_device(model.spatial, x_k, precision)
        return {"x_k": x_k, "f_spe": f_spe, "f_spa": f_spa, "enhanced": model.fuse(x_k, f_spe, f_spa)}


def network_on_device(network: Any, x_k: Any, precision: str) -> Any:
    """A branch's float32 output (the spectral network's ``f_spe``, the spatial student's
    ``f_spa``) on the tensor ``x_k``; FP16 under autocast; zeros for a branch the model has not."""
    import torch

    if network is None:
        return torch.zeros_like(x_k)
    if precision == "fp32":
        return network(x_k)
    with torch.autocast("cuda", dtype=torch.float16):
        return network(x_k).float()
