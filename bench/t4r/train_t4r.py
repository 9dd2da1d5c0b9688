"""Train Transformers4Rec 23.12 on an hf4rec prepared folder and score its test predictions with
hf4rec's metric code (and with T4R's own, to check the two agree on the same predictions).

Runs in the peer venv (`make bench-t4r-env` builds .venv-t4r):

    .venv-t4r/bin/python bench/t4r/train_t4r.py --data build/demo/data --architecture gpt2 --task clm \
        --minutes 25 --out bench/results/t4r_gpt2_clm.json

Item ids only (the issue's side-by-side setting); d_model, layers, heads, max length, batch
size and learning rate as given. Not a test: it measures.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # training.metrics needs only torch

import torch  # noqa: E402
import transformers4rec.torch as tr  # noqa: E402
from merlin.io import Dataset  # noqa: E402
from merlin.schema import Tags  # noqa: E402
from transformers import TrainerCallback  # noqa: E402
from transformers4rec.config.trainer import T4RecTrainingArguments  # noqa: E402
from transformers4rec.torch.ranking_metric import NDCGAt, RecallAt  # noqa: E402
from transformers4rec.torch.utils.data_utils import MerlinDataLoader  # noqa: E402

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
    def __init__(self, seconds: float):
        self.deadline = time.perf_counter() + seconds

    def on_step_end(self, args, state, control, **kwargs):
        if time.perf_counter() > self.deadline:
            control.should_training_stop = True
        return control


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
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=25.0)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--speed-steps", type=int, default=0, help="only measure: sequences/s over this many steps (no scoring)")
    parser.add_argument("--warmup-steps", type=int, default=3, help="steps before --speed-steps starts counting")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.speed_steps:
        args.max_steps, args.minutes = args.warmup_steps + args.speed_steps, 1e9
    warnings.simplefilter("ignore")
    schema = Dataset(str(args.data / "train"), engine="parquet").schema.select_by_tag(Tags.ITEM_ID)
    model = build_model(schema, args.architecture, args.task, args.d_model, args.layers, args.heads, args.max_length)
    training_args = T4RecTrainingArguments(
        output_dir=str(args.out.with_suffix(".trainer")), max_sequence_length=args.max_length, data_loader_engine="merlin",
        num_train_epochs=args.epochs, max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr, no_cuda=True, report_to=[], logging_steps=50, save_strategy="no", seed=0,
    )
    timer = StepTimer(args.warmup_steps)
    trainer = tr.Trainer(model=model, args=training_args, schema=schema, compute_metrics=True,
                         callbacks=[TimeBudget(60 * args.minutes), timer])
    trainer.train_dataset_or_path = str(args.data / "train" / "part_0.parquet")
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    if args.speed_steps:
        result = {"library": "transformers4rec 23.12", "sequences_per_s": timer.steps * args.batch_size / timer.seconds, "steps": timer.steps}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result) + "\n")
        print(json.dumps(result))
        return
    result = {
        "library": "transformers4rec 23.12", "architecture": args.architecture, "task": args.task,
        # HF's own samples/s assumes every planned epoch ran; the time budget stops earlier
        "train_seconds": seconds, "train_samples_per_second": trainer.state.global_step * args.batch_size / seconds,
        "epochs": trainer.state.epoch, "steps": trainer.state.global_step,
        "test": score_test(model, schema, str(args.data / "test" / "part_0.parquet"), args.max_length,
                           json.loads((args.data / "prepared.json").read_text())["special_codes"]["first_value"]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
