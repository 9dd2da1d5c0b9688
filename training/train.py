"""Train a next-item recommender on a prepared folder.

    python -m training.train --config training/configs/gpt2_clm.yaml --data DIR --out RUN_DIR [section.key=value ...] [--resume]

AdamW (decay on matrices only), linear warmup then cosine/linear decay, gradient clipping,
evaluation on the validation split every N epochs with early stopping on one metric, the best
weights kept, the last state checkpointed (a resumed run continues the same loss curve),
metrics to CSV, JSON, TensorBoard and a PNG plot. Every config, data and model error is
raised before the first step.
"""
from __future__ import annotations

import gc
import math
import os
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from training import cli, run_dir
from training.files import replace_csv, replace_file, replace_json
from training.allocator import keep_freed_memory
from training.config import Config, ConfigError, check, load_config
from training.batches import SequenceData
from training.evaluate import evaluate
from training.model.features import FeatureError, feature_spec
from training.model.losses import LossError, NextItemLoss
from training.model.configuration import ModelConfigError
from training.model.next_item import NextItemModel
from training.model.pretrained import load_item_embeddings
from training.progress import Progress
from training.model.tasks import TaskConfigError


class TrainingStep(nn.Module):
    """The loss of one batch as a module call, so DistributedDataParallel can wrap it."""

    def __init__(self, model: NextItemModel, loss: NextItemLoss, config: Config):
        super().__init__()
        self.model, self.loss, self.task = model, loss, config.task

    def forward(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        return self.model.loss(batch, self.loss, self.task, generator)


def rng_states(generator: torch.Generator) -> dict:
    """Every random state training draws from: dropout (torch's CPU and, when present, CUDA
    generators) and masking/negatives (the trainer's generator). Batch order needs none: it
    comes from (seed, epoch)."""
    states = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(states["torch"])
    generator.set_state(states["generator"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def distributed_rank() -> tuple[int, int]:
    """(rank, world size); starts the process group when launched by torchrun (gloo on CPU, NCCL on GPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


def lr_lambda(schedule: str, warmup: int, total: int, clock=None):
    """Warmup over `warmup` steps, then decay over the rest of `total` steps or, when `clock`
    is given (the share of a time budget spent, 0..1), over whichever runs out first."""
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


class Trainer:
    def __init__(self, config: Config, data: Path, out: Path):
        self.config, self.data, self.out = config, Path(data), Path(out)
        train = config.train
        check(config)  # before the data is read: a bad value is the one thing said
        keep_freed_memory()
        if train.threads:
            torch.set_num_threads(train.threads)
        self.rank, self.world = distributed_rank()
        self.device = torch.device("cuda" if train.device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if train.device == "auto" else train.device))
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(self.device)  # NCCL collectives of objects run on the current device
        if train.amp == "fp16" and self.device.type != "cuda":
            raise ConfigError(f"train.amp: expected none or bf16 on {self.device.type} (fp16 on a GPU only), got {train.amp!r}")
        torch.manual_seed(train.seed)
        self.spec = feature_spec(self.data, config.model.exclude_features)
        pretrained = None
        if config.model.pretrained_item_embeddings:
            pretrained = load_item_embeddings(config.model.pretrained_item_embeddings, self.data, self.spec.item_cardinality)
        self.model = NextItemModel(self.spec, config.model, pretrained).to(self.device)
        self.scaler = torch.amp.GradScaler("cuda") if train.amp == "fp16" else None
        self.train_data = SequenceData(self.data, "train", self.spec)
        self.valid_data = SequenceData(self.data, "valid", self.spec)
        if len(self.train_data) == 0:
            raise FeatureError(f"data dir {self.data}: no training sequence with 2 or more events")
        self.loss = NextItemLoss(config.loss, self.train_data.item_counts())
        self.optimizer = torch.optim.AdamW(self.model.optimizer_groups(train.weight_decay), lr=train.lr, betas=tuple(train.betas))
        self.step_module = TrainingStep(self.model, self.loss, config)
        if self.world > 1:  # HF bodies carry unused parameters (their 1-row word table)
            self.step_module = nn.parallel.DistributedDataParallel(self.step_module, find_unused_parameters=True)
        # every rank takes the same number of batches, so no rank waits on a missing all-reduce
        self.steps_per_epoch = self._steps_per_epoch(self.train_data)
        total = self.steps_per_epoch * train.epochs
        # under a time budget the decay follows the budget's clock too, so a budgeted run ends at a low rate
        self.budget_spent = 0.0  # share of train.time_budget_minutes used at the last tick, agreed by all ranks
        self.budget_start = None  # clock() when the budget's time began (moved back by the time a resumed run had spent)
        self.clock = time.perf_counter  # the budget's clock (a test injects its own)
        clock = (lambda: self.budget_spent) if train.time_budget_minutes else None
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(train.schedule, train.warmup_steps, total, clock))
        self.generator = torch.Generator().manual_seed(train.seed + self.rank)
        self.epoch, self.step, self.history, self.best, self.bad_evals = 0, 0, [], None, 0

    # --- state -----------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch, "step": self.step, "history": self.history, "best": self.best,
            "bad_evals": self.bad_evals, "rng": self._rng_of_every_rank(),
            "budget_spent": self.budget_spent, "budget_seconds": self.budget_seconds(),
        }

    def resume(self) -> None:
        state = run_dir.load_checkpoint(self.out, self.model)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.step, self.history = state["epoch"], state["step"], state["history"]
        self.best, self.bad_evals = state["best"], state["bad_evals"]
        set_rng_states(state["rng"][self.rank % len(state["rng"])], self.generator)
        self.budget_spent = state["budget_spent"]
        self.budget_start = self.clock() - state["budget_seconds"]  # the budget continues, it does not start again

    def _rng_of_every_rank(self) -> list[dict]:
        """The random states of every rank (each draws its own dropout and masks), by rank."""
        mine = rng_states(self.generator)
        if self.world == 1:
            return [mine]
        everyone = [None] * self.world
        dist.all_gather_object(everyone, mine)
        return everyone

    def budget_seconds(self) -> float:
        """Seconds of the time budget spent so far, earlier runs of a resumed one included."""
        return 0.0 if self.budget_start is None else self.clock() - self.budget_start

    # --- loop ------------------------------------------------------------------------------
    def schedule_steps(self, total: int) -> None:
        """Warm up, then decay the learning rate over `total` steps from here (`train_on` calls to come)."""
        train = self.config.train
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(train.schedule, train.warmup_steps, total))

    def _steps_per_epoch(self, data: SequenceData) -> int:
        return math.ceil(len(data) / self.config.train.batch_size) // self.world

    def train_on(self, data: SequenceData, epochs: int) -> dict:
        """`epochs` epochs on `data`, no evaluation or checkpoint (incremental training: one time window
        after another); returns the last epoch's record."""
        self.train_data = data
        self.steps_per_epoch = self._steps_per_epoch(data)
        record = {}
        for _ in range(epochs):
            record = self.train_epoch(None)
            self.epoch += 1
        return record

    def train_epoch(self, budget: tuple[float, float] | None) -> dict:
        train = self.config.train
        self.model.train()
        losses, sequences, started = [], 0, time.perf_counter()
        mine = (batch for index, batch in enumerate(self.epoch_batches())
                if index % self.world == self.rank and index < self.steps_per_epoch * self.world)
        progress = Progress(f"train: epoch {self.epoch + 1}/{train.epochs}", self.steps_per_epoch, "steps", enabled=self.rank == 0)
        for batch in mine:
            loss = self.train_step(batch)
            losses.append(loss.item())
            sequences += len(batch[self.spec.item])
            progress.update(1, loss=f"{losses[-1]:.3f}", seq_per_s=f"{sequences / (time.perf_counter() - started):.0f}")
            if budget is not None and self._tick(budget) >= 1.0:
                break
        progress.close()
        seconds = time.perf_counter() - started
        return {"train_loss": sum(losses) / max(len(losses), 1), "train_seconds": seconds,
                "sequences_per_s": self.world * sequences / seconds}

    def epoch_batches(self):
        """This epoch's training batches, shuffled (and length-bucketed) as the config says."""
        train = self.config.train
        return self.train_data.batches(train.batch_size, shuffle=True, seed=train.seed * 10_007 + self.epoch,
                                       bucket_batches=train.bucket_batches if train.bucket_by_length else 0)

    def train_step(self, batch: dict) -> torch.Tensor:
        """One optimisation step on one batch (AMP, clipping, scheduler); returns the loss."""
        train = self.config.train
        batch = {name: values.to(self.device, non_blocking=True) for name, values in batch.items()}
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(train.amp)
        with torch.autocast(self.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = self.step_module(batch, self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if train.clip_grad:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), train.clip_grad)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return loss

    def _tick(self, budget: tuple[float, float]) -> float:
        """Share of the time budget (start, seconds) spent, the largest over the ranks, so all
        ranks decay the rate alike and stop at the same step."""
        spent = (self.clock() - budget[0]) / budget[1]
        if self.world > 1:
            value = torch.tensor([spent], dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
            dist.all_reduce(value, op=dist.ReduceOp.MAX)
            spent = float(value.item())
        self.budget_spent = spent
        return spent

    def run(self, resume: bool = False) -> dict:
        """Train; rank 0 evaluates, checkpoints and writes the run directory, the others follow."""
        train = self.config.train
        lead = self.rank == 0
        if lead:
            run_dir.create(self.out, self.data, self.config, self.spec)
        self._barrier()
        if resume:
            self.resume()
        if self.budget_start is None:
            self.budget_start = self.clock()
        budget = (self.budget_start, 60 * train.time_budget_minutes) if train.time_budget_minutes else None
        writer = _tensorboard(self.out) if lead else None
        stopped = "epochs"
        while self.epoch < train.epochs:
            record = {"epoch": self.epoch + 1, **self.train_epoch(budget)}
            self.epoch += 1
            out_of_time = budget is not None and self._tick(budget) >= 1.0
            if self.epoch % train.eval_every_epochs == 0 or self.epoch == train.epochs or out_of_time:
                if lead:
                    self._validate(record)
                self.bad_evals = self._shared(self.bad_evals)
            record["step"] = self.step
            self.history.append(record)
            state = self.state()  # on every rank: it gathers their random states
            if lead:
                _log(writer, record)
                tqdm.write(_summary_line(record, train.early_stopping_metric), file=sys.stderr)
                run_dir.save_checkpoint(self.out, self.model, state)
                self._write_metrics()
            if out_of_time:
                stopped = "time budget"
                break
            if train.patience and self.bad_evals >= train.patience:
                stopped = "early stopping"
                break
        if writer is not None:
            writer.close()
        self._barrier()
        return self.finish(stopped) if lead else {}

    def _validate(self, record: dict) -> None:
        train = self.config.train
        metrics = evaluate(self.model, self.valid_data, train.ks, train.exclude_seen, train.eval_batch_size, train.eval_protocol,
                           progress="train: validation" if self.rank == 0 else None)
        record.update({f"valid_{k}": v for k, v in metrics.items()})
        score = metrics[train.early_stopping_metric]
        if self.best is None or score > self.best["score"]:
            self.best, self.bad_evals = {"epoch": self.epoch, "score": score}, 0
            run_dir.save_weights(self.model, self.out / run_dir.WEIGHTS)
        else:
            self.bad_evals += 1

    def _shared(self, value: int) -> int:
        """Rank 0's value on every rank."""
        if self.world == 1:
            return value
        tensor = torch.tensor([value], device=self.device if self.device.type == "cuda" else "cpu")
        dist.broadcast(tensor, src=0)
        return int(tensor.item())

    def _barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        """Ends the process group (torchrun). DistributedDataParallel's reducer goes first: it holds the
        group, and a group freed from the reducer's destructor keeps the GIL while it joins gloo's
        threads, one of which may still need the GIL to free its last work: the process then never exits."""
        if self.world > 1:
            self.step_module = self.step_module.module
            gc.collect()
            dist.destroy_process_group()  # frees the group without the GIL

    def finish(self, stopped: str) -> dict:
        model, config = run_dir.load_model(self.out)
        test = SequenceData(self.data, "test", self.spec)
        train = config.train
        result = {
            "stopped_by": stopped,
            "best_epoch": self.best["epoch"],
            "valid": {k[len("valid_"):]: v for k, v in self.history[self.best["epoch"] - 1].items() if k.startswith("valid_")},
            "test": evaluate(model, test, train.ks, train.exclude_seen, train.eval_batch_size, train.eval_protocol,
                             progress="train: test"),
            "train_sequences_per_s": sum(r["sequences_per_s"] for r in self.history) / len(self.history),
            "train_seconds": sum(r["train_seconds"] for r in self.history),
            "steps": self.step,
        }
        replace_json(self.out / "metrics.json", result)
        _plot(self.history, self.out / "curves.png", train.early_stopping_metric)
        return result

    def _write_metrics(self) -> None:
        columns = sorted({k for record in self.history for k in record}, key=lambda k: (k not in ("epoch", "step"), k))
        replace_csv(self.out / "metrics.csv", self.history, columns)


def summary(result: dict, out: Path, metric: str) -> str:
    """What a finished run prints: how it trained and its test metric; every metric is in metrics.json."""
    hit = metric.replace("ndcg", "hr") if metric.startswith("ndcg") else "hr@10"
    return (f"trained {out}: {result['steps']:,} steps in {result['train_seconds'] / 60:.1f} min, best epoch {result['best_epoch']} "
            f"({result['stopped_by']}); test {metric} {result['test'][metric]:.4f}, {hit} {result['test'].get(hit, float('nan')):.4f} "
            f"(every metric: {out / 'metrics.json'})")


def _summary_line(record: dict, metric: str) -> str:
    text = f"epoch {record['epoch']}: loss {record['train_loss']:.4f}, {record['sequences_per_s']:.0f} seq/s"
    if f"valid_{metric}" in record:
        text += f", valid {metric} {record[f'valid_{metric}']:.4f}"
    return text


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is in requirements.txt; a bare install still trains
        warnings.warn("tensorboard not installed: no TensorBoard logs")
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _log(writer, record: dict) -> None:
    if writer is None:
        return
    for name, value in record.items():
        if name not in ("epoch", "step"):
            writer.add_scalar(name.replace("valid_", "valid/").replace("train_", "train/"), value, record["step"])
    writer.flush()


def _plot(history: list[dict], path: Path, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [r["epoch"] for r in history]
    loss_axis.plot(epochs, [r["train_loss"] for r in history], marker="o")
    loss_axis.set(title="training loss", xlabel="epoch")
    evaluated = [r for r in history if f"valid_{metric}" in r]
    metric_axis.plot([r["epoch"] for r in evaluated], [r[f"valid_{metric}"] for r in evaluated], marker="o", color="tab:green")
    metric_axis.set(title=f"validation {metric}", xlabel="epoch")
    figure.tight_layout()
    replace_file(path, lambda tmp: figure.savefig(tmp, dpi=100, format="png"))
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = cli.Parser(prog="python -m training.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="YAML config (training/configs/*.yaml)")
    parser.add_argument("--data", type=Path, required=True, help="prepared folder (python -m training.prepare)")
    parser.add_argument("--out", type=Path, required=True, help="run directory")
    parser.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. model.d_model=128 train.epochs=3")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        if args.out.exists() and any(args.out.iterdir()) and not args.resume:
            raise ConfigError(f"run directory {args.out} exists and is not empty: choose another --out or pass --resume")
        trainer = Trainer(config, args.data, args.out)
    except (ConfigError, ModelConfigError, LossError, TaskConfigError, FeatureError, FileNotFoundError) as error:
        cli.refuse("train", error)
    result = trainer.run(resume=args.resume)
    trainer.close()
    if trainer.rank == 0:
        print(summary(result, args.out, trainer.config.train.early_stopping_metric))


if __name__ == "__main__":
    main()
