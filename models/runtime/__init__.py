"""Where a forward pass runs: inference backends (eager, compiled, ONNX Runtime, TensorRT), ONNX
export, int8 quantisation, warm-up and the backend choices."""
