"""From a trained model bundle to what runs onboard: ONNX export (:mod:`.onnx_export`), FP16 and
INT8 Q/DQ graphs (:mod:`.quantize`), the INT8 calibration set (:mod:`.calibration`), the Q/DQ and
FP16 graph checks TensorRT needs (:mod:`.graph_checks`), the accuracy gate (:mod:`.gate`), and the
TensorRT engine build with its versioned cache (:mod:`.tensorrt_engine`, :mod:`.engine_cache`).
Everything but the engine build runs on a CPU with onnx + onnxruntime (the ``onnx`` extra)."""
