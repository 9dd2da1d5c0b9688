"""bench.serving measures the runtime it is told to (--torch-runtime) on the Triton it is told to
(--triton-home), and refuses in one line a home without that runtime's backend. No server runs here."""
from __future__ import annotations

import pytest

from bench import serving


class Stop(Exception):
    pass


def triton_home(folder, backends):
    """A Triton home laid out as .triton/: its two programs and the named backends (empty files)."""
    for tool in ("tritonserver", "perf_analyzer"):
        (folder / "bin").mkdir(parents=True, exist_ok=True)
        (folder / "bin" / tool).write_text("")
    for name in backends:
        (folder / "backends" / name).mkdir(parents=True)
        (folder / "backends" / name / f"libtriton_{name}.so").write_text("")
    return folder


def test_a_home_without_the_runtimes_backend_is_refused_in_one_line(tmp_path):
    home = triton_home(tmp_path / "home", ["python"])
    with pytest.raises(SystemExit) as refused:
        serving.main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "out"),
                      "--torch-runtime", "libtorch", "--triton-home", str(home)])
    message = str(refused.value)
    assert "\n" not in message and str(home) in message and "--torch-runtime libtorch" in message
    assert message.endswith("missing ['pytorch']")
    assert not (tmp_path / "out").exists()  # refused before any export


def test_the_runtime_reaches_the_export_and_the_home_reaches_the_server(tmp_path, monkeypatch):
    import bench.merlin_reference.build
    import export.repository
    import serve.server

    home = triton_home(tmp_path / "home", ["python", "pytorch"])
    seen = {}
    monkeypatch.setattr(export.repository, "export", lambda run, repo, options: seen.update(runtime=options.torch_runtime))
    monkeypatch.setattr(bench.merlin_reference.build, "build_repository", lambda *args: {})

    class Server:
        def __init__(self, repo, **kwargs):
            seen["home"] = kwargs["layout"].home

        def __enter__(self):
            raise Stop

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(serve.server, "TritonServer", Server)
    with pytest.raises(Stop):
        serving.main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "out"),
                      "--torch-runtime", "libtorch", "--triton-home", str(home)])
    assert seen == {"runtime": "libtorch", "home": home}
