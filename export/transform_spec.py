"""The model's request-time transform: `transform.json` of the transform step.

Reads the fitted workflow's request-time part that `training.prepare` wrote as plain data
(`training.data.request_transform`: the raw column and fitted steps of every workflow output;
no pickle is read) and narrows it to the model: its inputs in order, the events it reads,
the session's item codes when it leaves them out but reads fewer events than the workflow
keeps (the request bounds are the step's config parameters). Tests check the served transform equals `workflow.transform`
on held-out data.
"""
from __future__ import annotations

from pathlib import Path

from export.torchscript import ExportError
from model_repository.contract import SEEN
from training.data import request_transform


def compile_workflow(data_dir: Path, model_inputs: list[str], kept_events: int, seen_items: bool = False,
                     history_events: int | None = None) -> dict:
    """`data_dir`: the run's prepared data; `model_inputs`: the model's input columns (prepared
    names, the item list first; a history column among them is the history's output);
    `kept_events`: events per session the model reads;
    `seen_items`: the model leaves out the session's items, so when the workflow keeps more
    events than the model reads, also output the codes of all its items (SEEN);
    `history_events`: history items the model reads (a session-aware model), the last ones."""
    try:
        workflow = request_transform.load(data_dir)
    except FileNotFoundError as error:
        raise ExportError(str(error)) from None
    outputs = {output["name"]: output for output in workflow["outputs"]}
    history = workflow.get("history")
    if history_events is not None:
        if not history:
            raise ExportError(f"{data_dir}: the model reads a user's earlier sessions, and the prepared data's request-time "
                              "transform has no history (prepared before serving compiled it): prepare the data again")
        model_inputs = [name for name in model_inputs if name != history["name"]]
        history = {**history, "events": min(int(history["events"]), history_events)}
    else:
        history = None
    unknown = [name for name in model_inputs if name not in outputs]
    if unknown:
        raise ExportError(f"model input {unknown[0]!r} is not an output of the workflow's request-time transform "
                          f"(it has {sorted(outputs)})")
    chosen = [outputs[name] for name in model_inputs]
    sources = {output["source"] for output in chosen} | {workflow["time_column"]}
    max_events = workflow["max_events"]
    return {
        "sequence_key": workflow["sequence_key"],
        "time_column": workflow["time_column"],
        "max_events": max_events,
        "model_events": min(max_events, kept_events),
        "seen": {"name": SEEN, "source": chosen[0]["source"]} if seen_items and kept_events < max_events else None,
        "oov_code": workflow["oov_code"],
        "inputs": [raw for raw in workflow["inputs"] if raw["name"] in sources],
        "outputs": chosen,
        "time_features": workflow.get("time_features"),
        "history": history,
    }
