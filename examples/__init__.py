"""Worked uses of the stages: `make demo`'s last leg (demo.py) and held-out sessions written as
example requests for the client and perf_analyzer (samples.py). No stage imports these."""
