"""Benchmark: how much a user's earlier sessions and the clock *can* lift next-item accuracy on
data from the synthetic generator: near-Bayes scorers that know the generator's catalogue
(successors, popularity, categories, day-part categories), scored on the prepared test split with
the session protocols of bench.sessions (`all`: every next event of the session; `last`).

    .venv/bin/python -m bench.history_headroom --data PREPARED --label NAME --set FIELD=VALUE ...

`--set` takes the generator settings the events were made with (as `training.data.datasets.synthetic`).
Each scorer gives the generator's next-item distribution given what it knows:
    P(x) = follow_prob [x = successor(current item)] + (1 - follow_prob) browse(x)
    browse(x) = d clock(x) + (1 - d) (t taste(x) + (1 - t) popularity(x))   (d daypart_taste, t user_taste)
where taste spreads the favourites' mass over categories in proportion to the categories counted
in the session (`session`) or in the session and the prepared history (`history`), and clock(x)
is the popularity within the day part's category when the scorer reads the clock (`+clock`, only
with daypart_taste), otherwise a mix over the day parts in proportion to their categories' counts
in the session (the session's items tell the day part too). The ratio history / session bounds what a model can gain from
history on that data (up to the counting estimate of the favourites). Not a test: it measures.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.output import write_json
from bench.sessions import KS, METRICS, PROTOCOLS
from training import cli
from training.data.datasets import synthetic
from training.progress import Progress
from training.metrics import ranking_metrics
from training.data.prepared import item_vocabulary, load_summary, read_split

ROOT = Path(__file__).resolve().parent.parent
SCORERS = ("session", "history", "session+clock", "history+clock")
SMOOTHING = 0.1  # counts added to every category before the favourites' shares are taken


def scorer_inputs(data: Path, config: synthetic.SyntheticConfig):
    """(catalogue, generator item of each item code or -1, day-part category of each part or None)."""
    items = synthetic.catalogue(config, np.random.default_rng(config.seed))
    vocabulary = item_vocabulary(data)
    of_code = np.full(load_summary(data)["item_cardinality"], -1, dtype=np.int64)
    of_code[vocabulary.index.to_numpy()] = vocabulary.to_numpy() - synthetic.FIRST_ITEM_ID
    parts = synthetic.daypart_clock(config)[1] if config.daypart_taste > 0 else None
    return items, of_code, parts


def score_split(data: Path, config: synthetic.SyntheticConfig) -> dict:
    """{scorer: {protocol: metrics}} over the prepared test split."""
    items, of_code, parts = scorer_inputs(data, config)
    test = read_split(data, "test")
    known = of_code >= 0
    code_items = np.where(known, of_code, 0)
    category = items.category[code_items]
    n_categories, k = config.n_categories, config.taste_categories
    within = items.popularity / np.bincount(items.category, weights=items.popularity, minlength=n_categories)[items.category]
    in_category = np.where(known, within[code_items], 0.0)
    popularity = np.where(known, items.popularity[code_items], 0.0)
    part_mass = np.stack([np.where(category == c, in_category, 0.0) for c in parts]) if parts is not None else None
    d, t, f = config.daypart_taste, config.user_taste, config.follow_prob
    successor_code = np.zeros(len(of_code), dtype=np.int64)
    code_of = {int(item): code for code, item in enumerate(of_code) if item >= 0}
    successor_code[known] = [code_of.get(int(s), 0) for s in items.successor[of_code[known]]]
    scorers = SCORERS if d > 0 else [name for name in SCORERS if not name.endswith("+clock")]
    ranks = {name: {"all": [], "last": []} for name in scorers}

    def rank_session(session: np.ndarray, history: np.ndarray, start: int) -> None:
        history_counts = np.bincount(category[history[known[history]]], minlength=n_categories).astype(float)
        clock = part_mass[synthetic.daypart_of(start)] if part_mass is not None else 0.0
        for position in range(len(session) - 1):
            current = session[:position + 1]
            counts = np.bincount(category[current[known[current]]], minlength=n_categories).astype(float)
            for name in scorers:
                seen = counts + (history_counts if name.startswith("history") else 0.0)
                share = np.minimum((seen + SMOOTHING) / (seen + SMOOTHING).sum() * k, 1.0) / k  # P(favourite) / k
                taste = share[category] * in_category
                if part_mass is None or name.endswith("+clock"):
                    part = clock
                else:  # the day part guessed as the favourites are: from the session's categories
                    weights = counts[parts] + SMOOTHING
                    part = (weights / weights.sum()) @ part_mass
                browse = d * part + (1 - d) * (t * taste + (1 - t) * popularity)
                scores = (1 - f) * browse
                if known[session[position]]:
                    scores[successor_code[session[position]]] += f
                scores[:3] = -np.inf  # pad, null, out-of-vocabulary: never recommended
                rank = int((scores >= scores[session[position + 1]]).sum()) - 1  # ties against the target
                ranks[name]["all"].append(rank)
                if position == len(session) - 2:
                    ranks[name]["last"].append(rank)

    with Progress("headroom", len(test), "sessions") as shown:
        for session, history, start in zip(test["item_id_list"], test["history_item_list"], test["timestamp_first"]):
            rank_session(np.asarray(session), np.asarray(history), int(start))
            shown.update()
    out = {}
    for name, by_protocol in ranks.items():
        out[name] = {}
        for protocol, values in by_protocol.items():
            metrics = ranking_metrics(torch.tensor(values), KS)
            out[name][protocol] = {f"{m}@{k}": float(metrics[f"{m}@{k}"].mean()) for m in METRICS for k in KS}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = cli.Parser(prog="python -m bench.history_headroom", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="prepared session-aware folder of synthetic events")
    parser.add_argument("--label", required=True, help="results go to bench/results/history_headroom_LABEL.json")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="the generator's settings")
    args = parser.parse_args(argv)
    with cli.answers_bad_input(parser.name, FileNotFoundError, ValueError):
        config = synthetic.config_from_settings(args.set)
        results = score_split(args.data, config)
    lines = ["| scorer | " + " | ".join(f"{p} HR@20 / NDCG@20" for p in PROTOCOLS) + " |"]
    for name, by_protocol in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{by_protocol[p]['hr@20']:.4f} / {by_protocol[p]['ndcg@20']:.4f}" for p in PROTOCOLS) + " |")
    print("\n".join(lines))
    write_json(ROOT / "bench" / "results" / f"history_headroom_{args.label}.json",
               {"data": str(args.data), "settings": args.set, "scorers": results})


if __name__ == "__main__":
    main()
