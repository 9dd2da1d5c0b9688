"""Train Transformers4Rec 23.12 on an hf4rec prepared folder and score its test predictions with
hf4rec's metric code (and with T4R's own, to check the two agree on the same predictions).

Runs in the peer venv (`make bench-t4r-env` builds .venv-t4r):

    .venv-t4r/bin/python bench/t4r/train_t4r.py --data build/demo/data --architecture gpt2 --task clm \
        --minutes 25 --out bench/results/t4r_gpt2_clm.json

Item ids only (the issue's side-by-side setting); d_model, layers, heads, max length, batch
size, AdamW's rate, decay, betas and clipping as given, under hf4rec's schedule (its own
`lr_lambda`: warmup, then decay that follows the time budget's clock) and the last weights
scored; training epochs timed by bench/t4r/definitions.py's clock, as hf4rec's side is. Not a
test: it measures.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # training.metrics needs only torch

import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
import transformers4rec.torch as tr  # noqa: E402
from merlin.io import Dataset  # noqa: E402
from merlin.schema import Tags  # noqa: E402
from transformers import TrainerCallback  # noqa: E402
from transformers4rec.config.trainer import T4RecTrainingArguments  # noqa: E402
from transformers4rec.torch.ranking_metric import NDCGAt, RecallAt  # noqa: E402
from transformers4rec.torch.utils.data_utils import MerlinDataLoader  # noqa: E402

from bench.t4r.definitions import WEIGHTS, EpochClock, lr_lambda, parameter_groups, settings  # noqa: E402
from training.metrics import ranking_metrics, target_ranks  # noqa: E402


class StepTimer(TrainerCallback):
    """Seconds between consecutive step ends after `warmup` steps: batch loading included."""

    def __init__(self, warmup: int):
        self.warmup, self.last, self.seconds, self.steps = warmup, None, 0.0, 0

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        if self.last is not None and state.global_step > self.warmup:
            self.seconds += now - self.last
            self.steps += 1
        self.last = now
        return control


class TimeBudget(TrainerCallback):
    """Stops training when the budget is spent; `spent()` is the share used so far (the schedule's clock),
    counted from the start of training as hf4rec counts it."""

    def __init__(self, seconds: float):
        self.seconds, self.started = seconds, time.perf_counter()

    def spent(self) -> float:
        return (time.perf_counter() - self.started) / self.seconds

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()
        return control

    def on_step_end(self, args, state, control, **kwargs):
        if self.spent() >= 1.0:
            control.should_training_stop = True
        return control


class EpochTimer(TrainerCallback):
    """Feeds the shared EpochClock the span of each training epoch (batch loading included)."""

    def __init__(self, clock: EpochClock):
        self.clock = clock

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.clock.begin()
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        self.clock.end()
        return control


class CountingTrainer(tr.Trainer):
    """Counts the sequences of every training step (a last short batch counts its real rows, as hf4rec's side)."""

    def __init__(self, clock: EpochClock, **kwargs):
        super().__init__(**kwargs)
        self.clock = clock

    def compute_loss(self, model, inputs, return_outputs=False):
        features, _ = inputs
        self.clock.step(len(next(iter(features.values()))))
        return super().compute_loss(model, inputs, return_outputs)


def build_model(schema, architecture: str, task: str, d_model: int, n_layers: int, n_heads: int, max_length: int):
    inputs = tr.TabularSequenceFeatures.from_schema(schema, max_sequence_length=max_length, d_output=d_model, masking=task)
    builders = {name: getattr(tr, config, None) for name, config in
                (("gpt2", "GPT2Config"), ("xlnet", "XLNetConfig"), ("bert", "BertConfig"), ("electra", "ElectraConfig"),
                 ("albert", "AlbertConfig"), ("roberta", "RobertaConfig"), ("llama", "LlamaConfig"))}
    if builders.get(architecture) is None:
        raise SystemExit(f"architecture {architecture!r} is not available in Transformers4Rec 23.12")
    config = builders[architecture].build(d_model=d_model, n_head=n_heads, n_layer=n_layers, total_seq_length=max_length)
    body = tr.SequentialBlock(inputs, tr.MLPBlock([d_model]), tr.TransformerBlock(config, masking=inputs.masking))
    return tr.Model(tr.Head(body, tr.NextItemPredictionTask(weight_tying=True), inputs=inputs))


def seen_before_target(items: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The items already in each sequence: every real item of the right-padded rows [B, L] but
    the last, which must be the row's label (pad code 0 elsewhere)."""
    if items.dim() != 2:
        raise SystemExit(f"score_test: expected padded item rows [B, L], got shape {tuple(items.shape)}")
    rows, last = torch.arange(len(items)), ((items != 0).sum(1) - 1).clamp(min=0)
    if not bool((items[rows, last] == labels).all()):
        raise SystemExit("score_test: expected each padded item row to end in its label")
    seen = items.clone()
    seen[rows, last] = 0
    return seen


@torch.no_grad()
def score_test(model, schema, test_path: str, max_length: int, first_item_code: int, ks=(5, 10, 20)) -> dict:
    """`first_item_code`: codes below it (pad, null, OOV) are never recommended, as in hf4rec.
    Plain metric names rank with the sequence's own items excluded (the standard ML-1M protocol,
    as hf4rec's train.exclude_seen); `all_items_*` rank them too."""
    loader = MerlinDataLoader.from_schema(schema, test_path, batch_size=256, max_sequence_length=max_length,
                                          shuffle=False, drop_last=False)
    model.eval()
    sums, rows = {}, 0
    t4r_metrics = {"ndcg@10": NDCGAt(top_ks=[10], labels_onehot=False), "recall@10": RecallAt(top_ks=[10], labels_onehot=False)}
    for batch in loader:
        inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
        out = model(inputs, training=False, testing=True)  # T4R masks and predicts each row's last item
        scores, labels = out["predictions"].float(), out["labels"].long()
        onehot = torch.nn.functional.one_hot(labels, scores.shape[1]).float()
        for metric in t4r_metrics.values():  # T4R's own metric code, on the same (unmasked) scores
            metric.update(scores, onehot)
        ours_unmasked = ranking_metrics(target_ranks(scores, labels), (10,))
        sums["unmasked_ndcg@10"] = sums.get("unmasked_ndcg@10", 0.0) + float(ours_unmasked["ndcg@10"].sum())
        sums["unmasked_recall@10"] = sums.get("unmasked_recall@10", 0.0) + float(ours_unmasked["recall@10"].sum())
        scores[:, :first_item_code] = float("-inf")
        for name, values in ranking_metrics(target_ranks(scores, labels), ks).items():
            sums[f"all_items_{name}"] = sums.get(f"all_items_{name}", 0.0) + float(values.sum())
        seen = seen_before_target(inputs[schema.select_by_tag(Tags.ITEM_ID).column_names[0]], labels)
        for name, values in ranking_metrics(target_ranks(scores, labels, exclude=seen), ks).items():
            sums[name] = sums.get(name, 0.0) + float(values.sum())
        rows += len(labels)
    result = {name: total / rows for name, total in sums.items()}
    result.update({f"t4r_{name}": float(metric.compute().reshape(-1)[0]) for name, metric in t4r_metrics.items()})
    result["test_sequences"] = rows
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--architecture", default="gpt2")
    parser.add_argument("--task", default="clm", choices=("clm", "mlm", "plm", "rtd"))
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.001, help="AdamW's peak rate")
    parser.add_argument("--weight-decay", type=float, default=0.1, help="on matrices only, as hf4rec")
    parser.add_argument("--betas", type=float, nargs=2, default=(0.9, 0.98))
    parser.add_argument("--clip-grad", type=float, default=1.0, help="max gradient norm")
    parser.add_argument("--schedule", default="cosine", help="hf4rec's train.schedule")
    parser.add_argument("--warmup-steps", type=int, default=100, help="hf4rec's train.warmup_steps")
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=25.0)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--speed-steps", type=int, default=0, help="only measure: sequences/s over this many steps (no scoring)")
    parser.add_argument("--warmup-timing-steps", type=int, default=3, help="steps before --speed-steps starts counting")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.speed_steps:
        args.max_steps, args.minutes = args.warmup_timing_steps + args.speed_steps, 1e9
    warnings.simplefilter("ignore")
    schema = Dataset(str(args.data / "train"), engine="parquet").schema.select_by_tag(Tags.ITEM_ID)
    model = build_model(schema, args.architecture, args.task, args.d_model, args.layers, args.heads, args.max_length)
    train_path = args.data / "train" / "part_0.parquet"
    # hf4rec's optimizer and schedule: decay on matrices only; warmup, then decay over the planned
    # steps or the time budget's clock, whichever runs out first
    budget = TimeBudget(60 * args.minutes)
    steps_per_epoch = math.ceil(pq.read_metadata(train_path).num_rows / args.batch_size)
    total = args.max_steps if args.max_steps > 0 else steps_per_epoch * args.epochs
    optimizer = torch.optim.AdamW(parameter_groups(model, args.weight_decay), lr=args.lr, betas=tuple(args.betas))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(args.schedule, args.warmup_steps, total, budget.spent))
    training_args = T4RecTrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="t4r-trainer-"),  # save_strategy "no": nothing is written there
        max_sequence_length=args.max_length, data_loader_engine="merlin",
        num_train_epochs=args.epochs, max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr, max_grad_norm=args.clip_grad, no_cuda=True, report_to=[], logging_steps=50,
        save_strategy="no", seed=0,
    )
    timer, clock = StepTimer(args.warmup_timing_steps), EpochClock()
    trainer = CountingTrainer(clock, model=model, args=training_args, schema=schema, compute_metrics=True,
                              callbacks=[budget, timer, EpochTimer(clock)], optimizers=(optimizer, scheduler))
    trainer.train_dataset_or_path = str(train_path)
    trainer.train()
    shutil.rmtree(training_args.output_dir, ignore_errors=True)
    if args.speed_steps:
        result = {"library": "transformers4rec 23.12", "sequences_per_s": timer.steps * args.batch_size / timer.seconds, "steps": timer.steps}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result) + "\n")  # compare_t4r renames it into place
        print(json.dumps(result))
        return
    ran_with = settings(
        data=str(args.data.resolve()), architecture=args.architecture, task=args.task, d_model=args.d_model,
        n_layers=args.layers, n_heads=args.heads, max_length=args.max_length, batch_size=args.batch_size, lr=args.lr,
        minutes=args.minutes, schedule=args.schedule, warmup_steps=args.warmup_steps, weight_decay=args.weight_decay,
        betas=args.betas, clip_grad=args.clip_grad, weights=WEIGHTS)  # WEIGHTS: the model as training left it
    result = {
        "library": "transformers4rec 23.12", "settings": ran_with, "precision": "none",  # float32, as hf4rec's train.amp=none
        **clock.report(), "epochs": trainer.state.epoch,
        "test": score_test(model, schema, str(args.data / "test" / "part_0.parquet"), args.max_length,
                           json.loads((args.data / "prepared.json").read_text())["special_codes"]["first_value"]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")  # compare_t4r renames it into place
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
