"""FP16 arithmetic that ONNX Runtime's CPU does not do, emulated so the accuracy gate can see it.

ONNX Runtime on a CPU has few FP16 kernels: it runs an FP16 graph's operators in FP32 between
casts it inserts, and drops the casts between two such operators, so values pass from layer to
layer unrounded (``1 * 300 * 300`` in FP16 gives 90000 there; FP16 gives inf). A gate scored that
way measures little more than the rounding of the weights.

:func:`fp16_storage_graph` rewrites an FP16 graph (:func:`edge_had.build.quantize.to_fp16`) into
one ONNX Runtime evaluates as *FP16 storage, FP32 arithmetic*: the FP16 initialisers become FP32
(exactly the FP16 values), each operator computes in FP32, and every tensor the FP16 graph holds
in FP16 is rounded to FP16 by an explicit ``Cast`` pair right after it is made - ranges overflow to
inf and flush to zero as in FP16. ONNX Runtime keeps such explicit pairs (it removes only casts
that lose nothing). That is what a TensorRT FP16 engine computes at most: its kernels accumulate
in FP32 and its fused layers round fewer intermediate tensors, not more.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

ROUNDED_SUFFIX = "__fp32"  # a tensor before its rounding to FP16


def fp16_storage_graph(source: str | Path, target: str | Path) -> Path:
    """Write the FP16-storage emulation of the FP16 graph ``source`` to ``target`` (see the
    module docstring); inputs, outputs and metadata are the source's."""
    import onnx

    model = emulate_fp16_storage(onnx.load(str(source)))
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
    return Path(target)


def emulate_fp16_storage(model: Any) -> Any:
    """A copy of the FP16 ``ModelProto`` that computes in FP32 and rounds each FP16 tensor."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper, shape_inference

    model = onnx.ModelProto.FromString(model.SerializeToString())
    typed = shape_inference.infer_shapes(model)
    dtype = {
        value.name: value.type.tensor_type.elem_type
        for value in [*typed.graph.value_info, *typed.graph.input, *typed.graph.output]
    }
    graph = model.graph
    for index, initializer in enumerate(graph.initializer):
        if initializer.data_type == TensorProto.FLOAT16:
            widened = numpy_helper.to_array(initializer).astype(np.float32)
            graph.initializer[index].CopyFrom(numpy_helper.from_array(widened, initializer.name))
    nodes = []
    for node in graph.node:
        for attribute in node.attribute:
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == TensorProto.FLOAT16:
                attribute.i = TensorProto.FLOAT  # the rounding follows as for any FP16 tensor
            if attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type == TensorProto.FLOAT16:
                widened = numpy_helper.to_array(attribute.t).astype(np.float32)
                attribute.t.CopyFrom(numpy_helper.from_array(widened, attribute.t.name))
        rounding = []
        for position, name in enumerate(node.output):
            if dtype.get(name) == TensorProto.FLOAT16:
                exact, half = name + ROUNDED_SUFFIX, name + "__fp16"
                node.output[position] = exact
                rounding += [
                    helper.make_node("Cast", [exact], [half], to=TensorProto.FLOAT16, name=f"{name}__round"),
                    helper.make_node("Cast", [half], [name], to=TensorProto.FLOAT, name=f"{name}__widen"),
                ]
        nodes += [node, *rounding]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # FP16 types recorded there no longer hold
    return model
