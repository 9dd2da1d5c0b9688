"""What Triton loads (the python steps' sources, copied by export) and the ensemble's contract (contract.py)."""
