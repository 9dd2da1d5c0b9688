"""What both sides of bench.compare_t4r do and how both are timed: one place, imported by the
hf4rec side (.venv) and by train_t4r.py (.venv-t4r), so standard library only.

Both libraries train with hf4rec's AdamW settings (decay on matrices only) under the same
schedule (linear warmup over WARMUP_STEPS, then cosine decay that reaches zero when the time
budget ends), and both are scored on the weights they end with (WEIGHTS: no validation-based
pick on either side). .venv-t4r cannot import training.train (its transformers is 4.30), so
`lr_lambda` and `parameter_groups` here are copies of hf4rec's; tests/test_bench_definitions.py
holds them equal to the originals.
"""
from __future__ import annotations

import math
import time

SCHEDULE = "cosine"  # hf4rec's train.schedule; the decay follows the time budget's clock on both sides
WARMUP_STEPS = 100  # hf4rec's train.warmup_steps default, given to both
WEIGHTS = "last"  # the weights scored: those each side ends with
TIMING = ("training epochs only, batch loading included; setup, validation and test scoring excluded; "
          "wall = time.perf_counter, cpu = time.process_time of the training process")
TIMING_FIELDS = ("train_wall_seconds", "train_cpu_seconds", "train_sequences", "train_steps",
                 "sequences_per_wall_s", "sequences_per_cpu_s")

SETTINGS = ("data", "architecture", "task", "d_model", "n_layers", "n_heads", "max_length", "batch_size", "lr",
            "minutes", "schedule", "warmup_steps", "weight_decay", "betas", "clip_grad", "weights")  # what a result records


def settings(**values) -> dict:
    """A result's record of what it ran with: exactly SETTINGS, in that order (betas as a list, as JSON reads it back)."""
    if set(values) != set(SETTINGS):
        raise ValueError(f"settings: expected the keys {list(SETTINGS)}, got {sorted(values)}")
    return {name: list(values[name]) if isinstance(values[name], tuple) else values[name] for name in SETTINGS}


def lr_lambda(schedule: str, warmup: int, total: int, clock=None):
    """training.train.lr_lambda: warmup over `warmup` steps, then decay over the rest of `total`
    steps or, when `clock` is given (the share of a time budget spent), whichever runs out first."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(warmup, 1)
        progress = min(1.0, (step - warmup) / max(total - warmup, 1))
        if clock is not None:
            progress = max(progress, min(1.0, clock()))
        if schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        if schedule == "linear":
            return 1 - progress
        return 1.0
    return factor


def parameter_groups(model, weight_decay: float) -> list[dict]:
    """training.model.next_item.parameter_groups: decay matrices (embeddings, projections), not 1-D parameters."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class EpochClock:
    """Wall and process CPU seconds spent inside training epochs, and the sequences and steps in them."""

    def __init__(self):
        self.wall = self.cpu = 0.0
        self.sequences = self.steps = 0
        self._started: tuple[float, float] | None = None

    def begin(self) -> None:
        self._started = (time.perf_counter(), time.process_time())

    def end(self) -> None:
        if self._started is None:
            raise RuntimeError("EpochClock.end without begin")
        wall, cpu = self._started
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu
        self._started = None

    def step(self, sequences: int) -> None:
        self.sequences += int(sequences)
        self.steps += 1

    def report(self) -> dict:
        """TIMING_FIELDS, with the definition they follow."""
        values = (self.wall, self.cpu, self.sequences, self.steps,
                  self.sequences / self.wall if self.wall else 0.0, self.sequences / self.cpu if self.cpu else 0.0)
        return {**dict(zip(TIMING_FIELDS, values)), "timing": TIMING}
