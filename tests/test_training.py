"""Losses, tasks, the trainer and its run directory, on the prepared synthetic data."""
from __future__ import annotations

import json
import os
import subprocess
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import PYTHON, ROOT
from training import run_dir
from training.baselines import baseline_metrics, rule_weights
from training.config import ConfigError, build_config, load_config, shipped_configs
from training.batches import SequenceData
from training.evaluate import evaluate
from training.model.features import FeatureError, feature_spec
from training.model.losses import LossConfig, NextItemLoss
from training.model.configuration import ModelConfig
from training.model.next_item import FIRST_ITEM_CODE, NextItemModel
from training.train import Trainer, lr_lambda

CONFIGS = shipped_configs()
FAST = ["train.epochs=1", "train.warmup_steps=2", "model.d_model=16", "model.max_length=12", "train.batch_size=256"]
# Learning is judged against baselines fitted on the same training split and ranked on the same test rows.
# The synthetic sessions are a first-order chain, so counted transitions are near the best any model can do
# (the generator's own probabilities score HR@10 0.741, NDCG@10 0.658 on the test split against their 0.710,
# 0.641, within one standard error of its 193 rows): a model that learned the transitions must come close to
# them and clearly above the most popular items (HR@10 0.435, NDCG@10 0.304).
ABOVE_POPULAR = 0.15  # HR@10 and NDCG@10 at least this much above most-popular
BELOW_TRANSITIONS = 0.10  # ... and at most this much below first-order transitions
# long enough to learn most transitions (160 steps): memorising them needs no dropout or decay
LEARN = ["model.max_length=12", "train.epochs=5", "train.batch_size=64", "train.lr=0.01", "train.warmup_steps=10",
         "train.weight_decay=0", "model.dropout=0", "model.attention_dropout=0"]
RTD_MARGIN = 0.02  # replaced-item AUC above the better of the popularity and transition detectors


def _model(spec, **overrides):
    torch.manual_seed(0)
    return NextItemModel(spec, ModelConfig(d_model=16, max_length=12, **overrides))


def assert_learns(data_dir, config, test_metrics: dict) -> None:
    """The model's test HR@10 and NDCG@10 beat most-popular by ABOVE_POPULAR and come within
    BELOW_TRANSITIONS of first-order transitions, all ranked by training.evaluate on the same rows."""
    train = config.train
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec = feature_spec(data_dir, config.model.exclude_features)
    baselines = baseline_metrics(SequenceData(data_dir, "train", spec), SequenceData(data_dir, "test", spec),
                                 train.ks, train.exclude_seen, train.eval_batch_size)
    table = {"model": test_metrics, **baselines}
    report = ", ".join(f"{name} hr@10 {m['hr@10']:.3f} ndcg@10 {m['ndcg@10']:.3f}" for name, m in table.items())
    print(report)
    for metric in ("hr@10", "ndcg@10"):
        assert test_metrics[metric] >= baselines["most_popular"][metric] + ABOVE_POPULAR, report
        assert test_metrics[metric] >= baselines["transitions"][metric] - BELOW_TRANSITIONS, report


@pytest.fixture(scope="module")
def spec(prepared_synthetic):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return feature_spec(prepared_synthetic)


def test_feature_spec_uses_every_feature_and_names_the_rest(prepared_synthetic):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the sequence key and start time organise rows: nothing to warn of
        spec = feature_spec(prepared_synthetic)
    assert spec.item == "item_id_list" and set(spec.categorical) == {"category_list"}
    assert spec.continuous == ("price_list",) and set(spec.context_categorical) == {"user_id_first", "device_first"}
    with pytest.warns(UserWarning, match=r"user_id_first \(excluded by the config\)"):
        assert "user_id_first" not in feature_spec(prepared_synthetic, exclude=("user_id_first",)).context_categorical
    with pytest.raises(FeatureError, match=r"exclude_features: unknown column\(s\) \['nope'\]"):
        feature_spec(prepared_synthetic, exclude=("nope",))


def test_full_cross_entropy_is_softmax_over_real_items(spec):
    model = _model(spec, temperature=0.5)
    hidden, targets = torch.randn(4, 16), torch.tensor([3, 10, 50, 7])
    logits = (hidden @ model.inputs.item_embedding.weight[FIRST_ITEM_CODE:spec.item_cardinality].T) / 0.5
    expected = F.cross_entropy(logits, targets - FIRST_ITEM_CODE)
    torch.testing.assert_close(NextItemLoss(LossConfig())(model.output_layer(), hidden, targets), expected)
    smoothed = NextItemLoss(LossConfig(label_smoothing=0.1))(model.output_layer(), hidden, targets)
    torch.testing.assert_close(smoothed, F.cross_entropy(logits, targets - FIRST_ITEM_CODE, label_smoothing=0.1))


def test_sampled_softmax_corrects_by_log_q_and_masks_accidental_hits(spec):
    model = _model(spec)
    loss = NextItemLoss(LossConfig(loss="sampled", n_negatives=3))
    hidden, targets = torch.randn(2, 16), torch.tensor([5, 9])
    negatives = torch.tensor([9, 20, 30])
    log_q = torch.log(torch.full((3,), 0.25))
    got = loss._sampled_softmax(model.output_layer(), hidden, targets, negatives, log_q)
    candidates = torch.tensor([5, 9, 9, 20, 30])
    logits = hidden @ model.inputs.item_embedding.weight[candidates].T - torch.log(torch.tensor(0.25))
    logits[1, 2] = float("-inf")  # row 1's target 9 drawn as a negative: not a negative
    torch.testing.assert_close(got, F.cross_entropy(logits, torch.tensor([0, 1])))


def test_sampled_softmax_leaves_out_the_targets_of_the_rows_own_sequence(spec):
    """In-batch targets stand for draws by popularity, which log q corrects for; another event of the
    row's own sequence was not drawn that way (it comes with the row), so it is no negative of the row."""
    model = _model(spec)
    loss = NextItemLoss(LossConfig(loss="sampled", n_negatives=2))
    hidden, targets = torch.randn(4, 16), torch.tensor([5, 6, 7, 8])
    sequences = torch.tensor([0, 0, 0, 1])  # rows 0-2 predict events of one sequence (rows come sorted by sequence)
    negatives, log_q = torch.tensor([20, 30]), torch.log(torch.full((2,), 0.25))
    got = loss._sampled_softmax(model.output_layer(), hidden, targets, negatives, log_q, sequences=sequences)
    candidates = torch.cat([targets, negatives])
    logits = hidden @ model.inputs.item_embedding.weight[candidates].T - torch.log(torch.tensor(0.25))
    same = (sequences[:, None] == sequences[None, :]) & ~torch.eye(4, dtype=torch.bool)
    logits[:, :4] = logits[:, :4].masked_fill(same, float("-inf"))
    torch.testing.assert_close(got, F.cross_entropy(logits, torch.arange(4)))
    assert not torch.allclose(got, loss._sampled_softmax(model.output_layer(), hidden, targets, negatives, log_q))


def test_gbce_with_t_zero_is_plain_binary_cross_entropy(spec):
    model = _model(spec)
    loss = NextItemLoss(LossConfig(loss="gbce", n_negatives=4, gbce_t=0.0))
    hidden, targets, negatives = torch.randn(3, 16), torch.tensor([4, 5, 6]), torch.tensor([10, 11, 12, 13])
    weights = model.inputs.item_embedding.weight
    positive = (hidden * weights[targets]).sum(-1)
    negative = hidden @ weights[negatives].T
    expected = (-F.logsigmoid(positive) - F.logsigmoid(-negative).sum(-1)).mean()
    torch.testing.assert_close(loss._gbce(model.output_layer(), hidden, targets, negatives), expected)


@pytest.mark.parametrize("loss_name,negatives", [
    ("sampled", "popularity"), ("sampled", "uniform"),
    pytest.param("gbce", "uniform", marks=pytest.mark.xfail(strict=True, reason=(
        "gbce learns no more than popularity in this budget (test HR@10 0.40, NDCG@10 0.28 against most-popular's "
        "0.435, 0.304; 0.47, 0.32 after 10 epochs)"))),
])
def test_sampled_losses_learn_the_transitions(prepared_synthetic, tmp_path, loss_name, negatives):
    overrides = [f"loss.loss={loss_name}", f"loss.negatives={negatives}", "loss.n_negatives=64"]
    config = load_config(ROOT / "training/configs/gpt2_clm.yaml", LEARN + overrides)
    result = Trainer(config, prepared_synthetic, tmp_path / "run").run()
    assert_learns(prepared_synthetic, config, result["test"])


@pytest.mark.parametrize("config_file", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_shipped_config_trains_and_writes_a_run_dir(prepared_synthetic, tmp_path, monkeypatch, config_file):
    config = load_config(config_file, FAST)
    out = tmp_path / "run"
    renamed, replace = set(), os.replace
    monkeypatch.setattr(os, "replace", lambda source, target: (renamed.add(Path(target)), replace(source, target))[1])
    trainer = Trainer(config, prepared_synthetic, out)
    result = trainer.run()
    monkeypatch.undo()
    assert result["steps"] == trainer.steps_per_epoch > 0
    for name in ("config.yaml", "run.json", "model.safetensors", "checkpoint.pt", "metrics.json", "metrics.csv", "curves.png"):
        assert out / name in renamed, f"{name} was not written whole and renamed into place"
    assert {path for path in out.iterdir() if path.is_file()} <= renamed  # nothing half-written left behind
    assert (out / "data" / "workflow" / "workflow.pkl").is_file() and (out / "data" / "train" / "schema.pbtxt").is_file()
    assert list((out / "tensorboard").iterdir())
    assert run_dir.load_config(out) == config
    # the reported metrics are exactly those of the saved best weights on the test split
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(result))
    model, _ = run_dir.load_model(out)
    test = SequenceData(prepared_synthetic, "test", model.spec)
    assert evaluate(model, test, config.train.ks, config.train.exclude_seen, protocol=config.train.eval_protocol) == \
        pytest.approx(result["test"], abs=1e-6)


def test_training_learns_the_synthetic_transitions(prepared_synthetic, tmp_path):
    config = load_config(ROOT / "training/configs/gpt2_clm.yaml", LEARN)
    result = Trainer(config, prepared_synthetic, tmp_path / "run").run()
    assert_learns(prepared_synthetic, config, result["test"])


def test_length_buckets_cut_padding_and_still_vary_per_epoch(prepared_synthetic, spec):
    from training.batches import SequenceData

    data = SequenceData(prepared_synthetic, "train", spec)

    def epoch(seed, bucket_batches):
        return [tuple(sorted((batch[spec.item] != 0).sum(1).tolist()))
                for batch in data.batches(32, shuffle=True, seed=seed, bucket_batches=bucket_batches)]

    def padded_cells(batches):
        return sum(len(lengths) * max(lengths) for lengths in batches)

    plain, bucketed = epoch(1, 0), epoch(1, 4)
    assert sorted(x for b in plain for x in b) == sorted(x for b in bucketed for x in b)  # the same rows
    assert padded_cells(bucketed) < 0.9 * padded_cells(plain)
    assert sorted(bucketed) != sorted(epoch(2, 4))  # other batches in another epoch
    whole = -(-len(data) // 32)  # one run over the whole epoch: the same batches every epoch
    assert sorted(epoch(1, whole)) == sorted(epoch(2, whole))


def test_under_a_time_budget_the_rate_decays_with_the_clock():
    spent = {"share": 0.0}
    factor = lr_lambda("cosine", warmup=10, total=1_000_000, clock=lambda: spent["share"])
    assert factor(5) == pytest.approx(0.6)  # warmup counts steps
    assert factor(20) == pytest.approx(1.0)
    spent["share"] = 0.5
    assert factor(20) == pytest.approx(0.5)  # half the budget spent: half-way down the cosine
    spent["share"] = 1.2
    assert factor(20) == pytest.approx(0.0)
    assert lr_lambda("cosine", 10, 110)(60) == pytest.approx(0.5)  # without a clock, steps alone


def test_budgeted_run_stops_in_time_at_a_low_rate(prepared_synthetic, tmp_path):
    config = load_config(ROOT / "training/configs/gpt2_clm.yaml", FAST + ["train.epochs=1000", "train.patience=0", "train.time_budget_minutes=0.1"])
    trainer = Trainer(config, prepared_synthetic, tmp_path / "run")
    result = trainer.run()
    assert result["stopped_by"] == "time budget" and result["train_seconds"] < 20
    assert trainer.scheduler.get_last_lr()[0] < 0.05 * config.train.lr


def test_the_model_stack_imports_without_nvtabular_or_merlin():
    blocked = "import sys; sys.modules.update(merlin=None, nvtabular=None, dask=None); "
    probe = blocked + "import training.train, training.evaluate, training.run_dir, training.model, training.batches; print('ok')"
    done = subprocess.run([PYTHON, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_evaluate_command_recomputes_the_saved_test_metrics(prepared_synthetic, tmp_path):
    out = tmp_path / "run"
    result = Trainer(load_config(ROOT / "training/configs/gpt2_clm.yaml", FAST), prepared_synthetic, out).run()
    completed = subprocess.run([PYTHON, "-m", "training.evaluate", "--run", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    printed = json.loads(completed.stdout)
    assert printed["ndcg@10"] == pytest.approx(result["test"]["ndcg@10"], abs=1e-5)
    assert printed["hr@10"] == pytest.approx(result["test"]["hr@10"], abs=1e-5)
    model, config = run_dir.load_model(out)
    excluded = evaluate(model, SequenceData(prepared_synthetic, "test", model.spec), config.train.ks, exclude_seen=True)
    for flag, expected in (("--exclude-seen", excluded), ("--no-exclude-seen", result["test"])):
        completed = subprocess.run([PYTHON, "-m", "training.evaluate", "--run", str(out), flag], cwd=ROOT, capture_output=True, text=True)
        assert completed.returncode == 0, completed.stderr
        assert json.loads(completed.stdout)["ndcg@10"] == pytest.approx(expected["ndcg@10"], abs=1e-5), flag
    assert excluded["ndcg@10"] != pytest.approx(result["test"]["ndcg@10"], abs=1e-5)  # the flag changes the ranking


@pytest.mark.parametrize("arguments,message", [
    (["model.d_modle=32"], "unknown key(s) ['model.d_modle']"),
    (["trian.epochs=1"], "unknown section(s) ['trian']"),
    (["model.architecture=transformer-xl"], "architecture: unknown 'transformer-xl'"),
    (["model.architecture=bert", "model.task=clm"], "task 'clm' does not fit architecture 'bert'"),
    (["model.architecture=gpt2", "model.task=plm"], "task 'plm' does not fit architecture 'gpt2'"),
    (["model.architecture=bert", "model.task=mlm", "model.max_length=1000"], "max length 1000 is above bert's limit of 512"),
    (["train.early_stopping_metric=auc"], "early_stopping_metric: 'auc' is not computed"),
    (["train.bucket_batches=0"], "train.bucket_batches: expected 1 or more batches per length-sorted run, got 0"),
    (["model.repeat_window=3", "loss.loss=gbce"], "the repeat score (model.repeat_window) trains with loss ce or sampled, not gbce"),
    (["task.horizon=0"], "task.horizon: expected 1 or more events ahead, got 0"),
    (["model.architecture=bert", "model.task=mlm", "task.horizon=3"], "task.horizon: events ahead train the clm task only, got horizon 3 with task 'mlm'"),
    (["task.horizon_decay=0"], "task.horizon_decay: expected a weight in (0, 1], got 0.0"),
])
def test_bad_config_is_a_one_line_error_before_training(prepared_synthetic, tmp_path, arguments, message):
    out = tmp_path / "run"
    completed = subprocess.run([PYTHON, "-m", "training.train", "--data", str(prepared_synthetic), "--out", str(out), *arguments],
                               cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode != 0
    lines = [line for line in completed.stderr.strip().splitlines() if not line.startswith(("  warn", "/"))]
    assert lines[-1].startswith("train: ") and message in lines[-1], completed.stderr
    assert not out.exists()


def test_data_dir_without_schema_is_refused(tmp_path):
    completed = subprocess.run([PYTHON, "-m", "training.train", "--data", str(tmp_path), "--out", str(tmp_path / "run")],
                               cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode != 0 and "no train/schema.pbtxt" in completed.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "run").exists()


def test_config_values_are_typed():
    config = build_config({"model": {"exclude_features": "user_id_first", "d_model": "32"}, "train": {"ks": 10}})
    assert config.model.exclude_features == ("user_id_first",) and config.model.d_model == 32 and config.train.ks == (10,)
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(None, ["epochs=3"])


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_chunked_cross_entropy_matches_pytorch_in_value_and_gradients(smoothing, monkeypatch):
    from training.model.losses import ChunkedCrossEntropy

    monkeypatch.setattr(ChunkedCrossEntropy, "ROWS", 7)  # several chunks and a ragged last one
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(30, 8, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 8, generator=generator, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(50, generator=generator, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (30,), generator=generator)
    ours = ChunkedCrossEntropy.apply(hidden, weight, bias, targets, smoothing)
    ours_grads = torch.autograd.grad(ours, (hidden, weight, bias))
    reference = F.cross_entropy(hidden @ weight.T + bias, targets, label_smoothing=smoothing)
    reference_grads = torch.autograd.grad(reference, (hidden, weight, bias))
    torch.testing.assert_close(ours, reference)
    for got, want in zip(ours_grads, reference_grads):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("dtype,grouped", [(torch.float64, False), (torch.float32, False), (torch.float64, True)])
def test_chunked_sampled_softmax_leaves_out_accidental_hits_like_the_masked_full_logits(dtype, grouped, monkeypatch):
    """Rows' targets are their own columns; another column holding the same item code is no negative,
    nor (grouped) another row's column of the row's group, in chunks cutting through groups."""
    from training.model.losses import ChunkedCrossEntropy

    monkeypatch.setattr(ChunkedCrossEntropy, "ROWS", 5)
    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(12, 8, generator=generator, dtype=dtype, requires_grad=True)
    weight = torch.randn(40, 8, generator=generator, dtype=dtype, requires_grad=True)
    bias = torch.randn(40, generator=generator, dtype=dtype, requires_grad=True)
    row_codes = torch.randint(3, 9, (12,), generator=generator)  # few codes: rows share targets
    column_codes = torch.cat([row_codes, torch.randint(3, 9, (28,), generator=generator)])
    own = torch.arange(12)
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 3, 3]) if grouped else None
    ours = ChunkedCrossEntropy.apply(hidden, weight, bias, own, 0.0, row_codes, column_codes, None, None, None, groups)
    ours_grads = torch.autograd.grad(ours, (hidden, weight, bias))
    hits = column_codes[None, :] == row_codes[:, None]
    if grouped:
        hits[:, :12] |= groups[None, :] == groups[:, None]
    hits[own, own] = False
    assert hits.any()
    reference = F.cross_entropy((hidden @ weight.T + bias).masked_fill(hits, float("-inf")), own)
    reference_grads = torch.autograd.grad(reference, (hidden, weight, bias))
    torch.testing.assert_close(ours, reference)
    for got, want in zip(ours_grads, reference_grads):
        torch.testing.assert_close(got, want)


def test_chunked_cross_entropy_under_bf16_autocast_is_close_to_float32():
    """Products in bfloat16, the softmax in float32: the loss and gradients stay near full precision."""
    from training.model.losses import ChunkedCrossEntropy

    generator = torch.Generator().manual_seed(2)
    hidden = torch.randn(700, 16, generator=generator, requires_grad=True)  # two chunks
    weight = (0.3 * torch.randn(300, 16, generator=generator)).requires_grad_()
    bias = torch.randn(300, generator=generator, requires_grad=True)
    targets = torch.randint(0, 300, (700,), generator=generator)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = ChunkedCrossEntropy.apply(hidden, weight, bias, targets, 0.1)
    ours_grads = torch.autograd.grad(ours, (hidden, weight, bias))
    reference = F.cross_entropy(hidden @ weight.T + bias, targets, label_smoothing=0.1)
    reference_grads = torch.autograd.grad(reference, (hidden, weight, bias))
    torch.testing.assert_close(ours, reference, rtol=0.02, atol=0.02)
    for got, want in zip(ours_grads, reference_grads):
        torch.testing.assert_close(got, want, rtol=0.05, atol=2e-4)


def test_two_process_data_parallel_run(prepared_synthetic, tmp_path):
    """torchrun with 2 CPU processes (gloo): each takes half the batches, rank 0 writes the run."""
    out = tmp_path / "ddp"
    torchrun = Path(PYTHON).parent / "torchrun"
    completed = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "training.train",
         "--config", str(ROOT / "training/configs/gpt2_clm.yaml"), "--data", str(prepared_synthetic), "--out", str(out),
         *FAST, "train.epochs=2", "train.batch_size=32"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,  # 12 s idle; a hang at exit (Trainer.close) runs into it
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads((out / "metrics.json").read_text())
    single_process_steps = -(-len(_train_rows(prepared_synthetic)) // 32)
    assert result["steps"] == 2 * (single_process_steps // 2)
    model, config = run_dir.load_model(out)  # the reported metrics are the saved weights' own
    assert evaluate(model, SequenceData(prepared_synthetic, "test", model.spec), config.train.ks) == pytest.approx(result["test"], abs=1e-6)
    assert completed.stdout.count("trained ") == 1  # one report, from rank 0


def _train_rows(prepared_dir):
    from training.batches import SequenceData

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SequenceData(prepared_dir, "train", feature_spec(prepared_dir)).lengths


def test_incremental_training_reports_every_window_and_the_average(prepared_synthetic, tmp_path):
    from training.incremental import run_incremental

    config = load_config(ROOT / "training/configs/gpt2_clm.yaml", FAST)
    result = run_incremental(config, prepared_synthetic, tmp_path / "run")
    summary = json.loads((prepared_synthetic / "prepared.json").read_text())
    n_windows = len(sum(summary["windows"].values(), []))
    assert len(result["windows"]) == n_windows - 1
    assert [r["eval_window"] for r in result["windows"]] == [f"windows/{w:04d}" for w in sorted(sum(summary["windows"].values(), []))[1:]]
    assert result["average"]["ndcg@10"] == pytest.approx(sum(r["ndcg@10"] for r in result["windows"]) / (n_windows - 1))
    assert (tmp_path / "run" / "model.safetensors").is_file() and (tmp_path / "run" / "incremental.csv").is_file()
    model, _ = run_dir.load_model(tmp_path / "run")  # the final weights, as evaluated on the last window
    last = SequenceData(prepared_synthetic, result["windows"][-1]["eval_window"], model.spec)
    last_metrics = evaluate(model, last, config.train.ks, config.train.exclude_seen)
    assert last_metrics == pytest.approx({k: v for k, v in result["windows"][-1].items() if "@" in k}, abs=1e-6)


def test_incremental_needs_time_windows(tmp_path):
    from training.incremental import window_splits

    folder = tmp_path / "prepared"
    folder.mkdir()
    (folder / "prepared.json").write_text(json.dumps({"split": "loo", "windows": None}))
    with pytest.raises(ConfigError, match="needs data prepared with --split time, got 'loo'"):
        window_splits(folder)


@pytest.mark.parametrize("freeze", [True, False])
def test_pretrained_item_embeddings_from_parquet_by_original_id(prepared_synthetic, tmp_path, freeze):
    import numpy as np
    import pandas as pd

    from training.data import prepared
    from training.model.pretrained import load_item_embeddings

    vocabulary = prepared.item_vocabulary(prepared_synthetic)
    vectors = pd.DataFrame({"item_id": vocabulary.values[::-1], "embedding": [np.full(4, float(code)) for code in vocabulary.index[::-1]]})
    vectors.iloc[:1].assign(item_id=-5).pipe(lambda unknown: pd.concat([vectors, unknown])).to_parquet(tmp_path / "items.parquet")
    catalog = int(vocabulary.index.max()) + 1
    table = load_item_embeddings(tmp_path / "items.parquet", prepared_synthetic, catalog)
    assert table.shape == (catalog, 4) and table[7, 0] == 7 and table[0].abs().sum() == 0
    out = tmp_path / "run"
    config = load_config(ROOT / "training/configs/gpt2_clm.yaml",
                         FAST + [f"model.pretrained_item_embeddings={tmp_path / 'items.parquet'}", f"model.freeze_pretrained={freeze}"])
    Trainer(config, prepared_synthetic, out).run()
    model, _ = run_dir.load_model(out)  # the vectors come back from the weights file
    stored = model.inputs.pretrained[0].weight
    assert torch.equal(stored, table) == freeze


def test_pretrained_embeddings_must_match_the_catalog(prepared_synthetic, tmp_path):
    import numpy as np

    from training.model.pretrained import load_item_embeddings

    np.save(tmp_path / "wrong.npy", np.zeros((7, 3), dtype=np.float32))
    with pytest.raises(FeatureError, match=r"expected shape \[600, dim\] \(one row per item code\), got \[7, 3\]"):
        load_item_embeddings(tmp_path / "wrong.npy", prepared_synthetic, 600)


def test_rtd_head_learns_to_spot_replaced_items(prepared_synthetic, tmp_path):
    from training.batches import SequenceData

    config = load_config(ROOT / "training/configs/electra_rtd.yaml", FAST + ["train.epochs=4", "train.batch_size=32"])
    trainer = Trainer(config, prepared_synthetic, tmp_path / "run")
    trainer.run()
    model = trainer.model.eval()
    assert len(model.task.generator_body.model.encoder.layer) == 1 and len(model.body.model.encoder.layer) == 2
    batch = next(SequenceData(prepared_synthetic, "test", trainer.spec).batches(256))
    items = batch[trainer.spec.item]
    generator = torch.Generator().manual_seed(0)
    replaced = (torch.rand(items.shape, generator=generator) < 0.2) & (items != 0)
    random_items = torch.randint(FIRST_ITEM_CODE, trainer.spec.item_cardinality, items.shape, generator=generator)
    with torch.no_grad():
        states = model.encode({**batch, trainer.spec.item: torch.where(replaced, random_items, items)})
        hidden, mask = states.hidden, states.mask
        logits = model.task.replaced_logits(hidden)
    shown = torch.where(replaced, random_items, items)
    counts = trainer.train_data.item_counts().double()
    follows = rule_weights(trainer.train_data).to_dense()
    previous = torch.cat([torch.zeros_like(shown[:, :1]), shown[:, :-1]], 1)
    detectors = {  # a rarely seen item, or one that rarely follows the item before it, is suspect
        "model": logits,
        "most_popular": -counts[shown],
        "transitions": -(follows[previous, shown] * (counts.sum() + 1) + counts[shown]),
    }
    auc = {name: _auc(scores[replaced], scores[mask & ~replaced]) for name, scores in detectors.items()}
    print("replaced-item detection AUC", auc)
    assert auc["model"] >= max(auc["most_popular"], auc["transitions"]) + RTD_MARGIN, auc


def _auc(positives: torch.Tensor, negatives: torch.Tensor) -> float:
    """Chance that a positive outscores a negative, ties counted half."""
    above = (positives[:, None] > negatives[None, :]).double().mean()
    return float(above + 0.5 * (positives[:, None] == negatives[None, :]).double().mean())
