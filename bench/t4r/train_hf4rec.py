"""The hf4rec side of bench.compare_t4r: `training.train` with its training epochs timed by the
clock train_t4r.py times Transformers4Rec with, scored on the test split as train_t4r.py scores
(`test`: the sequence's own items excluded; `all_items_*`: ranked too), one JSON result out.

    .venv/bin/python -m bench.t4r.train_hf4rec --config CONFIG --data DATA --run RUN_DIR --out RESULT.json [section.key=value ...]
"""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

from bench.output import write_json
from bench.t4r.definitions import WEIGHTS, EpochClock, settings


def ran_with(config, data: Path) -> dict:
    """The settings this config trains with, as a result records them."""
    model, train = config.model, config.train
    once = train.eval_every_epochs >= train.epochs  # validated only when training stops: its last weights are kept
    return settings(data=str(Path(data).resolve()), architecture=model.architecture, task=model.task,
                    d_model=model.d_model, n_layers=model.n_layers, n_heads=model.n_heads, max_length=model.max_length,
                    batch_size=train.batch_size, lr=train.lr, minutes=train.time_budget_minutes, schedule=train.schedule,
                    warmup_steps=train.warmup_steps, weight_decay=train.weight_decay, betas=train.betas,
                    clip_grad=train.clip_grad, weights=WEIGHTS if once else f"best validation every {train.eval_every_epochs} epochs")


def train(config_file: Path, data: Path, run: Path, overrides: list[str]) -> dict:
    from training import run_dir
    from training.config import load_config
    from training.batches import SequenceData
    from training.evaluate import evaluate
    from training.train import Trainer

    clock = EpochClock()

    class TimedTrainer(Trainer):
        def train_epoch(self, budget):
            clock.begin()
            try:
                return super().train_epoch(budget)
            finally:
                clock.end()

        def train_step(self, batch):
            clock.step(len(batch[self.spec.item]))
            return super().train_step(batch)

    config = load_config(config_file, overrides)
    trainer = TimedTrainer(config, data, run)
    result = trainer.run()
    model, _ = run_dir.load_model(run)
    test = SequenceData(data, "test", trainer.spec)
    all_items = evaluate(model, test, config.train.ks, False, config.train.eval_batch_size)
    return {"library": "hf4rec", "settings": ran_with(config, data), "precision": config.train.amp,
            **clock.report(), "epochs": trainer.epoch, "stopped_by": result["stopped_by"],
            "test": {**result["test"], **{f"all_items_{name}": value for name, value in all_items.items() if "@" in name}}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--run", type=Path, required=True, help="the run directory training writes")
    parser.add_argument("--out", type=Path, required=True, help="the result JSON")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    result = train(args.config, args.data, args.run, args.overrides)
    write_json(args.out, result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
