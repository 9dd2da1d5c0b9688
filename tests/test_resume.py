"""Resume: a run interrupted after a checkpoint and resumed ends where the uninterrupted run
ends (weights, metrics, learning rate), also under a time budget; a checkpoint is one unit."""
from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import ROOT
from training import run_dir
from training.config import load_config
from training.train import Trainer, rng_states, set_rng_states

FAST = ["train.warmup_steps=2", "model.d_model=16", "model.max_length=12", "train.batch_size=256", "train.patience=0"]
SECONDS_PER_STEP = 1.0  # the injected clock: time is the number of steps taken, so the budget runs out at the same step


class Interrupted(Exception):
    pass


def _trainer(config, data, out):
    trainer = Trainer(config, data, out)
    trainer.clock = lambda: trainer.step * SECONDS_PER_STEP
    return trainer


def _interrupted_after_checkpoint(trainer, monkeypatch, epochs: int) -> None:
    """Run until the checkpoint of epoch `epochs` is written, then stop as a killed process would."""
    save = run_dir.save_checkpoint

    def save_then_stop(run, model, state):
        save(run, model, state)
        if state["epoch"] == epochs:
            raise Interrupted
    monkeypatch.setattr(run_dir, "save_checkpoint", save_then_stop)
    with pytest.raises(Interrupted):
        trainer.run()
    monkeypatch.undo()


@pytest.mark.parametrize("config_file,budget", [
    ("bert_mlm.yaml", []),  # masking and dropout draw from the saved generators
    # 8 steps per epoch; the budget ends at step 30, in epoch 4, and the rate decays by the clock
    ("gpt2_clm.yaml", ["train.epochs=6", f"train.time_budget_minutes={30 * SECONDS_PER_STEP / 60}"]),
], ids=["epochs", "time-budget"])
def test_a_resumed_run_ends_where_the_uninterrupted_one_ends(prepared_synthetic, tmp_path, monkeypatch, config_file, budget):
    config = load_config(ROOT / "training/configs" / config_file, FAST + ["train.epochs=3", *budget])
    whole = _trainer(config, prepared_synthetic, tmp_path / "whole")
    expected = whole.run()
    _interrupted_after_checkpoint(_trainer(config, prepared_synthetic, tmp_path / "split"), monkeypatch, epochs=2)
    resumed = _trainer(config, prepared_synthetic, tmp_path / "split")
    result = resumed.run(resume=True)

    assert result["stopped_by"] == expected["stopped_by"] == ("time budget" if budget else "epochs")
    assert result["steps"] == expected["steps"] and len(resumed.history) == len(whole.history)
    for got, want in zip(resumed.history, whole.history):
        assert {k: v for k, v in got.items() if k.startswith(("train_loss", "valid_"))} == pytest.approx(
            {k: v for k, v in want.items() if k.startswith(("train_loss", "valid_"))}, rel=1e-6)
    assert resumed.scheduler.get_last_lr() == pytest.approx(whole.scheduler.get_last_lr(), rel=1e-9)
    assert result["test"] == pytest.approx(expected["test"], rel=1e-6)
    assert json.loads((tmp_path / "split" / "metrics.json").read_text())["test"] == pytest.approx(expected["test"], rel=1e-6)
    weights_whole = load_file(str(tmp_path / "whole" / run_dir.WEIGHTS))
    for name, tensor in load_file(str(tmp_path / "split" / run_dir.WEIGHTS)).items():
        torch.testing.assert_close(tensor, weights_whole[name], msg=name)
    for name, tensor in resumed.model.state_dict().items():
        torch.testing.assert_close(tensor, whole.model.state_dict()[name], msg=name)


def test_a_crash_while_checkpointing_never_pairs_new_weights_with_old_state(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    weights_at_step = {}

    def checkpoint(step: int) -> None:
        with torch.no_grad():
            model.weight.fill_(step)
        weights_at_step[step] = model.weight.detach().clone()
        run_dir.save_checkpoint(tmp_path, model, {"step": step})

    checkpoint(1)
    replace, crash_at = os.replace, 0
    while True:  # crash at the first rename, then the second, ... until the save gets through
        calls = []

        def crashing_replace(source, target, crash_at=crash_at, calls=calls):
            calls.append(target)
            if len(calls) > crash_at:
                raise OSError("killed while checkpointing")
            replace(source, target)
        monkeypatch.setattr(os, "replace", crashing_replace)
        try:
            checkpoint(2 + crash_at)
            done = True
        except OSError:
            done = False
        monkeypatch.setattr(os, "replace", replace)
        loaded = torch.nn.Linear(3, 2)
        state = run_dir.load_checkpoint(tmp_path, loaded)
        torch.testing.assert_close(loaded.weight, weights_at_step[state["step"]], msg=f"crash at rename {crash_at + 1}")
        if done:
            break
        crash_at += 1
    assert state["step"] == 2 + crash_at


def test_a_crash_while_writing_the_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    run_dir.save_checkpoint(tmp_path, model, {"step": 1})
    before = (tmp_path / run_dir.CHECKPOINT).read_bytes()
    save = torch.save

    def half_written(obj, path, *args, **kwargs):
        save(obj, path, *args, **kwargs)
        with open(path, "r+b") as handle:
            handle.truncate(os.path.getsize(path) // 2)
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", half_written)
    with pytest.raises(OSError, match="disk full"):
        run_dir.save_checkpoint(tmp_path, model, {"step": 2})
    assert (tmp_path / run_dir.CHECKPOINT).read_bytes() == before


def test_checkpoints_carry_the_cuda_generators_when_cuda_is_present(monkeypatch):
    """The CUDA code path, exercised on any machine: the states saved are the ones restored."""
    cuda_states, restored = [torch.tensor([1, 2, 3], dtype=torch.uint8)], []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: cuda_states)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    generator = torch.Generator().manual_seed(5)
    states = rng_states(generator)
    assert set(states) == {"torch", "generator", "cuda"} and states["cuda"] is cuda_states
    expected_draw = torch.rand(3, generator=generator)
    set_rng_states(states, generator)
    assert restored == [cuda_states] and torch.equal(torch.rand(3, generator=generator), expected_draw)
