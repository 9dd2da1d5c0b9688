"""merlin-systems' own packaging of a run's workflow and model.pt, served by the same Triton:
the reference the serving benchmark compares our ensemble to (see README.md)."""
