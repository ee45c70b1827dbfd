"""System-level acceleration: the forms a model runs in (PyTorch, ONNX), their executors and
the measurements that choose between them.

Modules are imported by name (`recaccel.runtime.export`, `recaccel.runtime.onnx_quantize`):
each backend's runtime is imported only by the module that needs it, so a machine without
ONNX Runtime can still use the PyTorch executors.
"""
