"""1,000 real YOOCHOOSE-like click sessions (3,926 events, 1,725 items, 2014-04-01..08), for tests.

They ship in `transformers4rec==23.12.0`'s source archive (Apache-2.0) as
`transformers4rec/data/testing/data.parquet`, one row per session with list columns. `fetch`
downloads that archive from PyPI's file host (pinned URL and sha256, checked before it is opened;
nothing of the package runs, not even its setup.py), extracts only that file into DATA_HOME and
renames it into place; nothing is installed and nothing is committed. `load_events` gives one row per click.

    python -m training.data.datasets.yoochoose_sample [--home .data]     (run by `make setup`)
"""
from __future__ import annotations

import hashlib
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from training.data.events import EventColumns, EventsError
from training.data.parquet import read_parquet
from training import cli

REQUIREMENT = "transformers4rec==23.12.0"
ARCHIVE = "transformers4rec-23.12.0.tar.gz"  # PyPI has no wheel of this release: the source archive
ARCHIVE_SHA256 = "b7a892aa29ec110d158dff60af4928a40b910c247f2447d50268050c3576bf5e"
ARCHIVE_URL = ("https://files.pythonhosted.org/packages/37/62/4381899528c996452665db85027914ba7ad845f99569fe0c41e75592ed9e/"
               + ARCHIVE)  # PyPI's JSON simple index for the release lists this URL with the sha256 above
MEMBER = "transformers4rec-23.12.0/transformers4rec/data/testing/data.parquet"
FILE = "yoochoose_sample.parquet"
FILE_SHA256 = "0ca438b41bdbd6cfe1ac60930e318a1d96ee19dda273c3d7574034b69c9d21c5"
DATA_HOME = Path(__file__).resolve().parents[2] / ".data"  # the repository's ignored data folder
COLUMNS = EventColumns(session="session_id", item="item_id", time="timestamp", categorical=("category",))
# the archive's list columns, per event, and what load_events names them
_LISTS = {"item_id/list": "item_id", "ts/list": "timestamp", "category/list": "category"}


def _sha256(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _checked(path: Path, expected: str) -> Path:
    digest = _sha256(path)
    if digest != expected:
        raise EventsError(f"{path}: expected sha256 {expected}, got {digest}; refusing to read it (delete it to fetch it again)")
    return path


def fetch(home: Path = DATA_HOME) -> Path:
    """home/FILE, downloaded and extracted unless already there (checked by sha256)."""
    target = home / FILE
    if target.exists():
        return _checked(target, FILE_SHA256)
    home.mkdir(parents=True, exist_ok=True)
    print(f"downloading {REQUIREMENT}'s source archive for {MEMBER} ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix=".yoochoose-", dir=home) as staging:
        staging = Path(staging)
        with urllib.request.urlopen(ARCHIVE_URL, timeout=120) as response, open(staging / ARCHIVE, "wb") as file:
            shutil.copyfileobj(response, file)
        with tarfile.open(_checked(staging / ARCHIVE, ARCHIVE_SHA256)) as archive:
            member = archive.getmember(MEMBER)
            if not member.isfile():  # a link or device would read something else
                raise EventsError(f"{ARCHIVE}: expected {MEMBER} to be a regular file, got type {member.type!r}")
            (staging / FILE).write_bytes(archive.extractfile(member).read())
        _checked(staging / FILE, FILE_SHA256).rename(target)
    return target


def load_events(path: Path) -> pd.DataFrame:
    """One row per click: session_id, item_id, timestamp (unix seconds), category, in session order."""
    sessions = read_parquet(path, columns=["session_id", *_LISTS])
    lengths = sessions["item_id/list"].map(len).to_numpy()
    events = {"session_id": np.repeat(sessions["session_id"].to_numpy(), lengths)}
    for column, name in _LISTS.items():
        events[name] = np.concatenate(sessions[column].to_numpy())
    return pd.DataFrame(events)


def main(argv: list[str] | None = None) -> None:
    parser = cli.Parser(prog="python -m training.data.datasets.yoochoose_sample", description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=DATA_HOME, help=f"data folder (default {DATA_HOME})")
    args = parser.parse_args(argv)
    try:
        path = fetch(args.home.resolve())
    except (EventsError, urllib.error.URLError, OSError, KeyError, tarfile.TarError) as error:
        cli.refuse("yoochoose_sample", error)
    print(f"{path}: {len(load_events(path)):,} events")


if __name__ == "__main__":
    main()
