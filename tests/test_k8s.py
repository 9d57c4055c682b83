"""deploy/k8s renders offline (``kubectl kustomize``) and every object passes Kubernetes' schemas
(``kubernetes-validate``, strict: no unknown fields), for the oldest and newest Kubernetes we name;
and what the pods run is what this package reads (commands, environment variables, the Secret)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from search.cli import main as cli
from search.storage.backend import CONNECT_TIMEOUT_ENV, STORAGE_ENV
from search.study.runner import WORKER_LABEL_ENV

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
# The oldest Kubernetes the manifests are for (Indexed Jobs with podFailurePolicy: beta, on by
# default, since 1.26; GA in 1.31), and the newest schemas kubernetes-validate ships.
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
PASSWORD = "pw-only-in-the-secret"


def _kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("kubectl is missing (.ci/run installs it)", pytrace=False)
        pytest.skip("kubectl is not installed")
    return found


def _render(tmp_path: Path, overlay: str, storage_env: bool = True) -> subprocess.CompletedProcess[str]:
    tree = tmp_path / "k8s"
    if not tree.exists():
        shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("storage.env"))
        if storage_env:
            example = (tree / "base" / "storage.env.example").read_text(encoding="utf-8")
            (tree / "base" / "storage.env").write_text(example.replace("CHANGE-ME", PASSWORD), encoding="utf-8")
    return subprocess.run([_kubectl(), "kustomize", str(tree / overlay)], capture_output=True, text=True,
                          timeout=60)


def _objects(tmp_path: Path, overlay: str) -> list[dict[str, Any]]:
    result = _render(tmp_path, overlay)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(name)]
    assert len(found) == 1, [(o["kind"], o["metadata"]["name"]) for o in objects]
    return found[0]


def _pod_specs(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o["spec"]["template"]["spec"] for o in objects if o["kind"] in ("Job", "Deployment", "StatefulSet")]


@pytest.mark.parametrize("overlay", ["base", "try"])
def test_the_manifests_render_and_pass_the_kubernetes_schemas(tmp_path: Path, overlay: str) -> None:
    objects = _objects(tmp_path, overlay)
    for version in VERSIONS:
        for obj in objects:
            kubernetes_validate.validate(obj, version, strict=True)  # raises on any schema error
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {"strategy-search"}


def test_workers_are_an_indexed_job_of_gpu_pods_and_the_try_runs_on_cpus(tmp_path: Path) -> None:
    base = _objects(tmp_path, "base")
    workers = _one(base, "Job", "strategy-search-workers")["spec"]
    assert workers["completionMode"] == "Indexed" and workers["completions"] == workers["parallelism"] == 4
    pod = workers["template"]["spec"]
    worker = pod["containers"][0]
    assert worker["args"] == ["worker", "$(STUDY)"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    # A configuration error (exit 2: unknown study, unreachable database) fails the Job instead of
    # restarting pods forever; SIGTERM has time to queue the running trial again.
    rules = workers["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "FailJob", "onExitCodes": {"containerName": "worker", "operator": "In",
                                                             "values": [2]}}
    assert pod["terminationGracePeriodSeconds"] >= 30
    names = [e["name"] for e in worker["env"]]
    # The label refers to INDEX, defined before it (Kubernetes expands $(VAR) only from earlier entries).
    assert names.index("INDEX") < names.index(WORKER_LABEL_ENV)
    assert {STORAGE_ENV, CONNECT_TIMEOUT_ENV, WORKER_LABEL_ENV, "STRATEGY_SEARCH_CACHE"} <= set(names)
    compile(pod["initContainers"][0]["args"][0], "wait-for-study", "exec")

    tried = _objects(tmp_path, "try")
    tried_workers = _one(tried, "Job", "strategy-search-workers")["spec"]
    assert tried_workers["completions"] == tried_workers["parallelism"] == 2
    assert "nvidia.com/gpu" not in str(tried_workers["template"]["spec"]["containers"][0]["resources"])
    postgres = _one(tried, "StatefulSet", "strategy-search-postgres")
    assert postgres["spec"]["serviceName"] == _one(tried, "Service", "strategy-search-postgres")["metadata"]["name"]


def test_the_dashboard_is_a_deployment_behind_a_cluster_ip_service(tmp_path: Path) -> None:
    objects = _objects(tmp_path, "base")
    deployment = _one(objects, "Deployment", "strategy-search-dashboard")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "dashboard"
    port = int(container["args"][container["args"].index("--port") + 1])
    service = _one(objects, "Service", "strategy-search-dashboard")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert container["ports"][0]["containerPort"] == port


def test_every_command_the_pods_run_exists_and_the_url_is_only_in_the_secret(tmp_path: Path) -> None:
    objects = _objects(tmp_path, "try")
    for spec in _pod_specs(objects):
        for container in spec.get("initContainers", []) + spec["containers"]:
            if container["image"].startswith("strategy-search") and "command" not in container:
                assert container["args"][0] in cli.commands, container["args"]
    secret = _one(objects, "Secret", "strategy-search-storage")
    assert set(secret["data"]) == {STORAGE_ENV, "POSTGRES_PASSWORD"}
    # Nowhere but the Secret: not in args, not as a plain env value, not in a ConfigMap.
    others = [o for o in objects if o["kind"] != "Secret"]
    assert PASSWORD not in yaml.safe_dump_all(others)
    for spec in _pod_specs(objects):
        for container in spec.get("initContainers", []) + spec["containers"]:
            for env in container.get("env", []):
                if env["name"] in (STORAGE_ENV, "POSTGRES_PASSWORD"):
                    assert env["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]


def test_without_storage_env_nothing_renders_and_the_error_names_the_file(tmp_path: Path) -> None:
    result = _render(tmp_path, "base", storage_env=False)
    assert result.returncode != 0
    assert "storage.env" in result.stderr
    assert "storage.env" in (ROOT / ".gitignore").read_text(encoding="utf-8")
