"""Run directory -> Triton model repository (feature transform -> PyTorch model -> top-k)."""
