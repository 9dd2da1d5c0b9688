"""Stage boundaries that keep the pieces installable on their own."""
from __future__ import annotations

import subprocess

from tests.conftest import PYTHON, ROOT

HEAVY = ("torch", "nvtabular", "merlin", "transformers", "dask", "training", "export")


def test_client_imports_nothing_heavy():
    script = f"import sys, client\nprint([m for m in {HEAVY!r} if m in sys.modules])"
    result = subprocess.run([PYTHON, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_serve_launcher_imports_nothing_heavy():
    script = f"import sys, serve.server, serve.install\nprint([m for m in {HEAVY!r} if m in sys.modules])"
    result = subprocess.run([PYTHON, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
