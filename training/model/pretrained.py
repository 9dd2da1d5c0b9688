"""Pretrained item embeddings (content vectors from text or image models) aligned to item codes.

Two file forms, read without unpickling anything:
- `.npy`: a float array [catalog size, dim] whose row i belongs to item code i;
- `.parquet`: a column named like the prepared item column's source (the original item id)
  and an `embedding` list column; items missing from the file get zeros.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from training.data import prepared
from training.model.features import FeatureError
from training.data.parquet import read_parquet


def load_item_embeddings(path: str | Path, prepared_dir: Path, catalog: int) -> torch.Tensor:
    path = Path(path)
    if not path.is_file():
        raise FeatureError(f"pretrained_item_embeddings: file {path} does not exist")
    if path.suffix == ".npy":
        vectors = np.load(path, allow_pickle=False)
        if vectors.ndim != 2 or vectors.shape[0] != catalog:
            raise FeatureError(f"pretrained_item_embeddings {path}: expected shape [{catalog}, dim] (one row per item code), got {list(vectors.shape)}")
    elif path.suffix == ".parquet":
        item_column = prepared.load_summary(prepared_dir)["columns"]["item"]
        frame = read_parquet(path)
        missing = [c for c in (item_column, "embedding") if c not in frame.columns]
        if missing:
            raise FeatureError(f"pretrained_item_embeddings {path}: missing column(s) {missing}; it has {list(frame.columns)}")
        vocabulary = prepared.item_vocabulary(prepared_dir)
        codes = pd.Series(vocabulary.index, index=vocabulary.values)
        known = frame[frame[item_column].isin(codes.index)]
        table = np.stack(known["embedding"].to_numpy())
        vectors = np.zeros((catalog, table.shape[1]), dtype=np.float32)
        vectors[codes.loc[known[item_column]].to_numpy()] = table
    else:
        raise FeatureError(f"pretrained_item_embeddings {path}: expected a .npy or .parquet file, got {path.suffix!r}")
    vectors = torch.as_tensor(np.asarray(vectors, dtype=np.float32))
    vectors[0] = 0  # padding stays zero
    if not torch.isfinite(vectors).all():
        raise FeatureError(f"pretrained_item_embeddings {path}: contains NaN or infinite values")
    return vectors
