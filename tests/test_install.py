"""serve.install unpacks only the pinned wheels (name and sha256 checked before anything is
unpacked) and never writes a member outside the folder it unpacks into."""
from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

import serve.install as install

PYTRITON = next(name for name in install.PINNED_SHA256 if name.startswith("nvidia_pytriton"))


def _wheel(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_a_member_resolving_outside_the_target_is_refused_and_not_written(tmp_path):
    target = tmp_path / "box" / "home"
    for escaping in ("pytriton/tritonserver/../x", "pytriton/tritonserver//" + str(tmp_path / "box" / "y")):
        wheel = _wheel(tmp_path / "crafted.whl", {"pytriton/tritonserver/bin/ok": b"ok", escaping: b"payload"})
        with pytest.raises(install.InstallError, match=r"crafted.whl: member .* outside .*refusing to unpack it"):
            install._extract(wheel, "pytriton/tritonserver/", target)
    assert sorted(p.name for p in (tmp_path / "box").iterdir()) == ["home"]


def test_members_inside_the_target_are_unpacked(tmp_path):
    wheel = _wheel(tmp_path / "fine.whl", {"pytriton/tritonserver/bin/tool": b"binary", "other/file": b"skipped"})
    install._extract(wheel, "pytriton/tritonserver/", tmp_path / "home")
    assert (tmp_path / "home" / "bin" / "tool").read_bytes() == b"binary" and not (tmp_path / "home" / "other").exists()


def test_a_wheel_whose_sha256_differs_from_the_pin_is_refused_before_unpacking(tmp_path, monkeypatch):
    """pip download leaves a wheel of the pinned name but other content: install unpacks nothing."""
    def pip_download(command, check):
        dest = Path(command[command.index("-d") + 1])
        _wheel(dest / PYTRITON, {"pytriton/tritonserver/bin/tritonserver": b"not the real server"})

    monkeypatch.setattr(install.subprocess, "run", pip_download)
    with pytest.raises(install.InstallError, match=rf"{PYTRITON}: expected sha256 {install.PINNED_SHA256[PYTRITON]}, got [0-9a-f]{{64}}"):
        install.install(tmp_path / "home")
    assert not (tmp_path / "home").exists() and not list(tmp_path.glob("home.*"))
