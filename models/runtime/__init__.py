"""Where a forward pass runs: the inference backends (torch, compile, ONNX Runtime, TensorRT), ONNX
export, and the torch-free copies of the choices settings and flags offer."""
