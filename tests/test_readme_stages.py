"""The README's stages, run by hand as a user copies them: every command between its
`<!-- stages:begin -->` and `<!-- stages:end -->` markers, as written and in order (only the
output folder build/quick is moved to a temporary one), on the local Triton."""
from __future__ import annotations

import shlex
import subprocess

from tests.conftest import ROOT

README = ROOT / "README.md"
SERVE = [".venv/bin/python", "-m", "serve"]


def stage_commands() -> list[list[str]]:
    block = README.read_text().split("<!-- stages:begin -->")[1].split("<!-- stages:end -->")[0]
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.startswith(".venv/bin/python")]


def test_the_readme_has_every_stage_in_its_by_hand_block():
    modules = [command[2] for command in stage_commands()]
    for stage in ("training.prepare", "training.train", "training.evaluate", "training.predict", "export", "serve", "client"):
        assert stage in modules, f"the README's stages block lacks {stage}"
    assert modules.index("serve") < modules.index("client") and modules.index("export") < modules.index("serve")


def test_the_readme_stage_commands_run_as_written_in_order(tmp_path):
    server = None
    try:
        for command in stage_commands():
            command = [part.replace("build/quick", str(tmp_path / "quick")) for part in command]
            if command[:3] == SERVE:  # serves until stopped: the next commands need it ready
                server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                ready = server.stdout.readline()
                assert ready.startswith("Triton ready: gRPC 127.0.0.1:8001"), ready
                continue
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
            assert done.returncode == 0, (" ".join(command), done.stderr[-3000:])
        answers = done.stdout.strip().splitlines()  # the client's, the last command
        assert len(answers) == 5 and all(answer.count("(") == 10 for answer in answers), done.stdout
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=60)
