"""Models trained elsewhere (ONNX, torch.export, a PyTorch class), bound to a schema file."""
