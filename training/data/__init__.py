"""Preprocessing: raw events -> views and splits -> fitted NVTabular workflow -> the prepared folder
(`prepared.py`, the contract read by training). It knows nothing of the model."""
