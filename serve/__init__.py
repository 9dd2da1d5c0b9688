"""Local Triton Inference Server: unpack it from registry wheels, start and stop it."""
