"""Query a served hf4rec recommender. Imports only tritonclient, numpy and pandas/pyarrow."""
