"""Export of trained brisc models to ONNX, TorchScript and torch.export (needs the `train` extra)."""
