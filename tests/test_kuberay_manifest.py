"""kuberay_rayjob.yaml (+ kuberay_mlflow.yaml) must be a RayJob KubeRay accepts, running a pipeline
of this repository the way `lvdm run` parses it, on a cluster that fits what that pipeline asks.

No package on PyPI ships KubeRay's CRD, so the RayJob's own fields are checked against
tests/data/kuberay_rayjob_v1.schema.json (transcribed from KubeRay's Go types; its $comment
names them); the Kubernetes types inside it (pod templates, metadata) and the MLflow manifests
are checked against kubernetes-validate's strict schemas, which refuse unknown fields.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import shlex
import tomllib
from importlib import resources
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource

from pipelines.cli import _parser
from pipelines.config import load_pipeline
from stages.cluster_check import Node

REPO = Path(__file__).resolve().parents[1]
K8S_VERSION = "1.33"  # the strict schemas validated against; the manifests use no newer field
K8S_DEFINITIONS = "https://kubernetes.io/api/_definitions.json"


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return yaml.safe_load((REPO / "kuberay_rayjob.yaml").read_text())


@pytest.fixture(scope="module")
def mlflow_docs() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all((REPO / "kuberay_mlflow.yaml").read_text()) if d]
    return {d["kind"]: d for d in docs}


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((REPO / "tests/data/kuberay_rayjob_v1.schema.json").read_text())
    folder = (
        resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{K8S_VERSION}.0-local-strict"
    )
    definitions = json.loads((folder / "_definitions.json").read_text())
    assert definitions["$id"] == K8S_DEFINITIONS
    registry = Registry().with_resource(K8S_DEFINITIONS, Resource.from_contents(definitions))
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _cluster(rayjob: dict) -> dict:
    return rayjob["spec"]["rayClusterSpec"]


def _pods(rayjob: dict) -> list[tuple[str, dict, int]]:
    """(group, pod spec, pod count) for the head and every worker group."""
    cluster = _cluster(rayjob)
    pods = [("head", cluster["headGroupSpec"]["template"], 1)]
    for group in cluster.get("workerGroupSpecs", []):
        count = group.get("replicas", 0) * group.get("numOfHosts", 1)
        pods.append((group["groupName"], group["template"], count))
    return pods


def _entrypoint(rayjob: dict) -> list[str]:
    return shlex.split(rayjob["spec"]["entrypoint"])


def _run_args(rayjob: dict):
    argv = _entrypoint(rayjob)
    assert argv[:2] == ["lvdm", "run"], f"the entrypoint runs {argv[:2]}, not `lvdm run`"
    return _parser().parse_args(argv[1:])


def _image_project_dir() -> str:
    """Where ./Dockerfile copies this repository inside the image."""
    copies = [
        line.split() for line in (REPO / "Dockerfile").read_text().splitlines() if line.startswith("COPY")
    ]
    sources = [words for words in copies if "." in words[1:-1]]
    assert len(sources) == 1, "the Dockerfile should COPY the repository (.) once"
    return sources[0][-1].rstrip("/")


def _pipeline(rayjob: dict):
    args = _run_args(rayjob)
    overrides = list(args.overrides) + ([f"ray.address={args.address}"] if args.address else [])
    image_dir = _image_project_dir()
    assert args.pipeline.startswith(image_dir + "/"), (
        f"{args.pipeline}: give the pipeline by its path in the image ({image_dir}/pipelines/...): a "
        "relative path would depend on the working folder Ray starts the job in on the head"
    )
    local = REPO / args.pipeline.removeprefix(image_dir + "/")
    assert local.is_file(), f"{args.pipeline}: no {local.relative_to(REPO)} in this repository"
    return args, load_pipeline(local, overrides)


def _quantity(value: str | int | float) -> float:
    units = {
        "m": 1e-3,
        "k": 1e3,
        "M": 1e6,
        "G": 1e9,
        "T": 1e12,
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
    }
    number, unit = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value)).groups()
    return float(number) * units.get(unit, 1)


def _limits(pod: dict) -> dict:
    return pod["spec"]["containers"][0]["resources"]["limits"]


# --- the schema ------------------------------------------------------------------------------


def test_rayjob_has_only_kuberay_fields_and_valid_pod_templates(rayjob, validator):
    errors = sorted(validator.iter_errors(rayjob), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


@pytest.mark.parametrize(
    "path, key, value",
    [
        (("spec",), "shutdownAfterJobFinish", True),  # misspelt RayJob field
        (("spec", "rayClusterSpec", "authOptions"), "mode", "Token"),  # not in the enum
        (("spec", "rayClusterSpec", "headGroupSpec", "rayStartParams"), "num-cpus", 0),  # not a string
        (("spec", "rayClusterSpec", "headGroupSpec", "template", "spec", "containers", 0), "resource", {}),
    ],
)
def test_the_schema_refuses_what_kuberay_or_kubernetes_would(rayjob, validator, path, key, value):
    broken = copy.deepcopy(rayjob)
    node = broken
    for step in path:
        node = node[step]
    node[key] = value
    assert not validator.is_valid(broken)


def test_mlflow_manifests_are_valid_kubernetes_objects(mlflow_docs):
    assert set(mlflow_docs) == {"PersistentVolumeClaim", "Deployment", "Service", "NetworkPolicy"}
    for doc in mlflow_docs.values():
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


# --- the job: a pipeline of this repo, as `lvdm run` parses it ---------------------------------


def test_entrypoint_is_lvdm_run_of_a_pipeline_in_this_repo(rayjob):
    entrypoint = rayjob["spec"]["entrypoint"]
    # KubeRay pastes the entrypoint unquoted into the submitter's bash command line
    # (`ray job submit ... -- ENTRYPOINT ; fi`): shell syntax would run on the submitter.
    assert not re.search(r"[;&|<>`$()\\'\"]", entrypoint), f"shell syntax in the entrypoint: {entrypoint!r}"
    args, config = _pipeline(rayjob)
    assert args.until is None or args.until in config.stages
    assert config.ray.address == "auto", "inside a Ray job the driver joins the job's cluster: --address auto"


def test_workdir_is_the_object_store_uri_as_given(rayjob):
    # Every retry and resubmission must land in the same workdir: on storage outside the
    # cluster (the cluster is deleted after the job), passed through `lvdm run` unchanged.
    given = _entrypoint(rayjob)[_entrypoint(rayjob).index("--workdir") + 1]
    assert urlparse(given).scheme in {"s3", "gs"} and urlparse(given).netloc, given
    assert str(_run_args(rayjob).workdir) == given.rstrip("/"), (
        f"lvdm run turned --workdir {given} into {_run_args(rayjob).workdir}"
    )


def test_data_root_is_mounted_on_every_ray_pod(rayjob):
    # The shard stage's tasks run on whichever pod Ray picks: each must see data.root.
    _, config = _pipeline(rayjob)
    root = Path(config.data.root)
    for group, pod, _ in _pods(rayjob):
        mounts = [Path(m["mountPath"]) for m in pod["spec"]["containers"][0].get("volumeMounts", [])]
        assert any(root.is_relative_to(m) for m in mounts), f"{group}: data.root {root} is on no volume"


# --- the cluster fits the pipeline -------------------------------------------------------------


def _nodes(rayjob: dict) -> list[tuple[str, Node, dict]]:
    """One stages.cluster_check.Node per pod, with the logical resources KubeRay gives Ray
    (CPU and GPU from the Ray container's limits), so the test fits bundles as the pipeline's
    pre-flight check does."""
    nodes = []
    for group, pod, count in _pods(rayjob):
        limits = _limits(pod)
        resources_ = {"CPU": _quantity(limits["cpu"]), "GPU": _quantity(limits.get("nvidia.com/gpu", 0))}
        nodes += [(group, Node(f"{group}-{i}", resources_), limits) for i in range(count)]
    return nodes


def test_gpu_workers_hold_every_gpu_stage_of_the_pipeline(rayjob):
    from stages.registry import STAGES  # imports torch: only here

    _, config = _pipeline(rayjob)
    nodes = _nodes(rayjob)
    asked = []
    for stage in config.stages:
        for section in map(config.section, STAGES[stage].sections):
            train = getattr(section, "train", None)
            if train is not None and train.use_gpu:
                bundle = {"CPU": train.cpus_per_worker, "GPU": 1}
                held = sum(node.holds(bundle) for _, node, _ in nodes)
                assert held >= train.num_workers, (
                    f"{stage}: {train.num_workers} Ray Train workers of {bundle}; the workers hold {held}"
                )
                # Real cores for each worker and its DataLoader processes, on the pods with GPUs.
                for group, node, _ in nodes:
                    gpus = node.resources["GPU"]
                    need = gpus * (train.cpus_per_worker + train.loader_workers)
                    assert node.resources["CPU"] >= need, (
                        f"{group}: {gpus:g} GPUs need {need:g} CPUs for {stage}"
                    )
                asked.append(stage)
            elif getattr(section, "use_gpu", False):  # one GPU per task (cache_latents, sample, ...)
                assert any(node.holds({"CPU": 1, "GPU": 1}) for _, node, _ in nodes), stage
                asked.append(stage)
    assert asked, "the pipeline has no GPU stage: a GPU worker group would idle"
    head = [node for group, node, _ in nodes if group == "head"]
    assert head[0].resources["GPU"] == 0, "the head drives the pipeline; GPUs belong to the workers"


def test_gpu_requests_equal_limits_and_shm_fits_in_memory(rayjob):
    for group, pod, _ in _pods(rayjob):
        container = pod["spec"]["containers"][0]
        requests, limits = container["resources"]["requests"], container["resources"]["limits"]
        assert requests.get("nvidia.com/gpu") == limits.get("nvidia.com/gpu"), group
        shm = [v for v in pod["spec"].get("volumes", []) if v.get("emptyDir", {}).get("medium") == "Memory"]
        for volume in shm:
            assert _quantity(volume["emptyDir"]["sizeLimit"]) < _quantity(limits["memory"]), group


# --- security: token auth on, nothing exposed ---------------------------------------------------


def _env(rayjob: dict) -> list[dict]:
    return [e for _, pod, _ in _pods(rayjob) for c in pod["spec"]["containers"] for e in c.get("env", [])]


def test_ray_token_auth_stays_on(rayjob):
    cluster = _cluster(rayjob)
    auth = cluster["authOptions"]
    assert auth["mode"] == "token" and auth["secretName"]
    assert all(e["name"] != "RAY_AUTH_MODE" or e.get("value") == "token" for e in _env(rayjob))
    pinned = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    ray_version = next(d.split("==")[1] for d in pinned if d.startswith("ray["))
    assert cluster["rayVersion"] == ray_version, "rayVersion must be the Ray the image runs"
    assert f"rayproject/ray:{ray_version}-" in (REPO / "Dockerfile").read_text()


def test_dashboard_and_mlflow_are_reachable_only_inside_the_cluster(rayjob, mlflow_docs):
    head = _cluster(rayjob)["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP" and not head.get("enableIngress")
    assert head.get("headService", {}).get("spec", {}).get("type", "ClusterIP") == "ClusterIP"
    for _, pod, _ in _pods(rayjob):
        assert not pod["spec"].get("hostNetwork")
        assert all("hostPort" not in p for c in pod["spec"]["containers"] for p in c.get("ports", []))
    assert mlflow_docs["Service"]["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_object_store_credentials_come_from_a_secret(rayjob):
    text = (REPO / "kuberay_rayjob.yaml").read_text() + (REPO / "kuberay_mlflow.yaml").read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)
    for group, pod, _ in _pods(rayjob):
        env = {e["name"]: e for e in pod["spec"]["containers"][0].get("env", [])}
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
            assert "secretKeyRef" in env[name].get("valueFrom", {}), f"{group}: {name} not from a Secret"


# --- lifecycle ---------------------------------------------------------------------------------


def test_cluster_goes_away_and_failures_are_retried(rayjob):
    spec = rayjob["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["backoffLimit"] >= 1, "a retry reruns the pipeline on a new cluster: it resumes"
    assert spec.get("submissionMode", "K8sJobMode") == "K8sJobMode"
    assert spec["submitterConfig"]["backoffLimit"] >= 1
    for group in _cluster(rayjob)["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
    images = {c["image"] for _, pod, _ in _pods(rayjob) for c in pod["spec"]["containers"]}
    assert len(images) == 1, f"one image for every Ray pod (Ray needs one version): {images}"


# --- MLflow: the URI the runs use reaches the in-cluster server --------------------------------


def _mlflow_args(deployment: dict) -> dict[str, str]:
    command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["mlflow", "server"]
    return dict(arg.removeprefix("--").split("=", 1) for arg in command[2:])


def test_tracking_uri_names_the_mlflow_service(rayjob, mlflow_docs):
    _, config = _pipeline(rayjob)
    uri = urlparse(config.mlflow.tracking_uri)
    service, deployment = mlflow_docs["Service"], mlflow_docs["Deployment"]
    assert uri.scheme == "http" and uri.hostname == service["metadata"]["name"]
    port = next(p for p in service["spec"]["ports"] if p["port"] == uri.port)
    args = _mlflow_args(deployment)
    assert int(args["port"]) == port["targetPort"]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    # mlflow server answers only Host headers in --allowed-hosts (exact, or fnmatch with '*':
    # mlflow.server.security_utils.is_allowed_host_header); the Ray pods send "mlflow:5000".
    allowed = args["allowed-hosts"].split(",")
    host = uri.netloc
    assert any(fnmatch.fnmatch(host, a) if "*" in a else host == a for a in allowed), (host, allowed)
    assert "localhost:5000" in allowed, "kubectl port-forward svc/mlflow 5000:5000 sends Host localhost:5000"


def test_one_mlflow_worker_writes_a_sqlite_store(mlflow_docs):
    args = _mlflow_args(mlflow_docs["Deployment"])
    if args["backend-store-uri"].startswith("sqlite:"):
        assert args.get("workers") == "1", "MLflow's default is 4 uvicorn workers on one SQLite file"


def test_network_policy_admits_every_ray_pod_to_mlflow(rayjob, mlflow_docs):
    policy, deployment = mlflow_docs["NetworkPolicy"], mlflow_docs["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    admitted = [
        peer["podSelector"]["matchLabels"] for rule in policy["spec"]["ingress"] for peer in rule["from"]
    ]
    for group, pod, _ in _pods(rayjob):
        labels = pod.get("metadata", {}).get("labels", {})
        assert any(sel.items() <= labels.items() for sel in admitted), f"{group} pods cannot reach MLflow"
