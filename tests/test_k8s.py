"""k8s/: every manifest validates offline, the overlays render, and the names agree with the pipeline."""

from __future__ import annotations

import configparser
import copy
import fnmatch
import json
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import pytest
import yaml

from geogan.stages import pipeline as gp
from tests.helpers.params import ROOT

kubernetes_validate = pytest.importorskip("kubernetes_validate")
jsonschema = pytest.importorskip("jsonschema")

K8S = ROOT / "k8s"
K8S_VERSION = "1.32.0"  # the kubectl on the machine image; kubernetes-validate bundles 1.25-1.37
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
SCHEMA = json.loads((K8S / "schemas" / "pytorchjob-v1.schema.json").read_text())
WORKLOADS = {"Deployment", "StatefulSet", "Job", "DaemonSet"}


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def _docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def _validate(doc: dict) -> None:
    """Kubernetes objects against the bundled OpenAPI schemas (strict); PyTorchJobs against ours."""
    if doc["kind"] == "PyTorchJob":
        _validate_pytorchjob(doc)
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def _validate_pytorchjob(job: dict) -> None:
    jsonschema.validate(job, SCHEMA)
    for replica_type, replica in job["spec"]["pytorchReplicaSpecs"].items():
        pod_template = {"apiVersion": "v1", "kind": "PodTemplate",
                        "metadata": {"name": f"{job['metadata']['name']}-{replica_type.lower()}"},
                        "template": replica["template"]}
        kubernetes_validate.validate(pod_template, K8S_VERSION, strict=True)


def _containers(doc: dict) -> list[dict]:
    if doc["kind"] == "PyTorchJob":
        return [c for r in doc["spec"]["pytorchReplicaSpecs"].values() for c in r["template"]["spec"]["containers"]]
    if doc["kind"] in WORKLOADS:
        return doc["spec"]["template"]["spec"]["containers"]
    return []


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    """`kubectl kustomize` of every overlay, on a copy of k8s/ whose secret env files come from the examples."""
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl is not on PATH: cannot render the kustomize overlays (install kubectl >= 1.27)")
    copy_dir = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, copy_dir, ignore=shutil.ignore_patterns("*.env"))
    for example in copy_dir.rglob("*.env.example"):
        shutil.copy(example, example.with_suffix(""))
    out = {}
    for name in ["base", *(f"overlays/{o}" for o in OVERLAYS)]:
        result = subprocess.run([kubectl, "kustomize", str(copy_dir / name)], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, f"kubectl kustomize k8s/{name} failed:\n{result.stderr}"
        out[name] = _docs(result.stdout)
    return out


# ---------------------------------------------------------------- the files as committed


@pytest.mark.parametrize("path", _manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_file_validates(path):
    docs = _docs(path.read_text())
    assert docs, f"{path}: no objects"
    for doc in docs:
        _validate(doc)


def test_there_are_two_overlays():
    assert OVERLAYS == ["aws", "onprem"]


def test_no_secret_values_are_committed():
    for path in _manifest_files():
        assert all(d["kind"] != "Secret" for d in _docs(path.read_text())), f"{path}: a Secret with values"
    ignored = (K8S / ".gitignore").read_text().split()
    for kustomization in (K8S / "overlays").glob("*/kustomization.yaml"):
        for generator in yaml.safe_load(kustomization.read_text()).get("secretGenerator", []):
            assert "literals" not in generator, f"{kustomization}: secret {generator['name']} has literal values"
            for env in generator["envs"]:
                env_file = kustomization.parent / env
                assert any(fnmatch.fnmatch(env_file.name, p) for p in ignored if not p.startswith("!")), env_file
                assert env_file.with_name(env_file.name + ".example").is_file(), f"{env_file}.example missing"


def test_pytorchjob_template_is_what_the_pipeline_builds():
    m = Path(gp.DATA_MOUNT)
    command = gp.torchrun_command(4, gp.train_args(m / "params.yaml", "Mustache", m / "data/prepared",
                                                   m / "data/landmarks", m / "data/splits/Mustache.json",
                                                   m / "models/Mustache", m / "runs/Mustache"),
                                  nnodes=2, python="python")
    expected = gp.pytorchjob_manifest("geogan-train-mustache", gp.IMAGE, command, nodes=2, gpus_per_node=4)
    assert _docs((K8S / "jobs" / "pytorchjob-train.yaml").read_text()) == [expected], (
        "k8s/jobs/pytorchjob-train.yaml drifted from geogan.stages.pipeline.pytorchjob_manifest")


@pytest.mark.parametrize("nodes,gpus", [(1, 0), (1, 8), (4, 2)])
def test_generated_pytorchjobs_validate(nodes, gpus):
    command = gp.torchrun_command(max(gpus, 1), ["--attribute", "Mustache"], nnodes=nodes, python="python")
    job = gp.pytorchjob_manifest(gp.k8s_name("geogan", "Mustache", "abc"), gp.IMAGE, command, nodes, gpus,
                                 namespace="kubeflow")
    _validate_pytorchjob(job)
    assert ("Worker" in job["spec"]["pytorchReplicaSpecs"]) == (nodes > 1)
    limits = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits.get("nvidia.com/gpu") == (str(gpus) if gpus else None)


@pytest.mark.parametrize("mutate", [
    lambda j: j["spec"].update(pytorchReplicaSpec=j["spec"].pop("pytorchReplicaSpecs")),
    lambda j: j["spec"]["pytorchReplicaSpecs"]["Master"].update(restartPolicy="Sometimes"),
    lambda j: j["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0].update(name="main"),
    lambda j: j["spec"]["pytorchReplicaSpecs"]["Master"].update(replicas=2),
    lambda j: j["spec"]["pytorchReplicaSpecs"].update(Chief=j["spec"]["pytorchReplicaSpecs"]["Master"]),
    lambda j: j["spec"]["runPolicy"].update(cleanPodPolicy="Always"),
    lambda j: j["metadata"].update(name="Geogan_Train"),
], ids=["spec-typo", "restart-policy", "container-name", "two-masters", "tf-replica", "clean-policy", "name"])
def test_pytorchjob_schema_rejects_what_the_operator_would(mutate):
    job = _docs((K8S / "jobs" / "pytorchjob-train.yaml").read_text())[0]
    bad = copy.deepcopy(job)
    mutate(bad)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)


def test_pytorchjob_schema_fields_match_the_training_sdk():
    models = pytest.importorskip("kubeflow.training.models")
    spec = SCHEMA["properties"]["spec"]["properties"]
    assert set(spec) == set(models.KubeflowOrgV1PyTorchJobSpec.attribute_map.values())
    assert set(spec["runPolicy"]["properties"]) == set(models.KubeflowOrgV1RunPolicy.attribute_map.values())
    assert set(spec["elasticPolicy"]["properties"]) == set(models.KubeflowOrgV1ElasticPolicy.attribute_map.values())
    assert (set(spec["runPolicy"]["properties"]["schedulingPolicy"]["properties"])
            == set(models.KubeflowOrgV1SchedulingPolicy.attribute_map.values()))
    assert set(SCHEMA["$defs"]["replicaSpec"]["properties"]) == set(models.KubeflowOrgV1ReplicaSpec.attribute_map.values())


# ---------------------------------------------------------------- the rendered overlays


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates(rendered, overlay):
    docs = rendered[f"overlays/{overlay}"]
    for doc in docs:
        _validate(doc)
        assert doc["metadata"].get("namespace") == "kubeflow", f"{doc['kind']}/{doc['metadata']['name']}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_limits_and_servers_have_probes(rendered, overlay):
    for doc in rendered[f"overlays/{overlay}"]:
        for container in _containers(doc):
            where = f"{overlay}: {doc['kind']}/{doc['metadata']['name']}/{container['name']}"
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{where}: no cpu/memory {kind}"
            if doc["kind"] in {"Deployment", "StatefulSet"}:
                assert "readinessProbe" in container and "livenessProbe" in container, f"{where}: no probes"
        if doc["kind"] in {"Deployment", "StatefulSet"}:
            assert doc["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_provides_what_the_pipeline_refers_to(rendered, overlay):
    objects = {(d["kind"], d["metadata"]["name"]): d for d in rendered[f"overlays/{overlay}"]}
    pvc = objects[("PersistentVolumeClaim", gp.DATA_PVC)]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert set(gp.S3_SECRET_KEYS) <= set(objects[("Secret", gp.S3_SECRET)]["data"])
    assert set(gp.MLFLOW_SECRET_KEYS) <= set(objects[("Secret", gp.MLFLOW_SECRET)]["data"])
    assert ("ServiceAccount", gp.SERVICE_ACCOUNT) in objects
    binding = objects[("RoleBinding", gp.SERVICE_ACCOUNT)]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": gp.SERVICE_ACCOUNT, "namespace": "kubeflow"}]
    rules = objects[("Role", binding["roleRef"]["name"])]["rules"]
    assert any("pytorchjobs" in r["resources"] and {"create", "get", "watch"} <= set(r["verbs"]) for r in rules)
    # Every Secret and ConfigMap a container refers to exists in the overlay.
    for doc in objects.values():
        for container in _containers(doc):
            refs = [(("Secret" if "secretRef" in e else "ConfigMap"), (e.get("secretRef") or e["configMapRef"])["name"])
                    for e in container.get("envFrom", [])]
            refs += [("Secret", e["valueFrom"]["secretKeyRef"]["name"]) for e in container.get("env", [])
                     if "secretKeyRef" in e.get("valueFrom", {})]
            for ref in refs:
                assert ref in objects, f"{overlay}: {doc['metadata']['name']} refers to missing {ref}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mlflow_server_uses_postgres_and_proxies_artifacts_to_s3(rendered, overlay):
    objects = {(d["kind"], d["metadata"]["name"]): d for d in rendered[f"overlays/{overlay}"]}
    (server,) = objects[("Deployment", "geogan-mlflow")]["spec"]["template"]["spec"]["containers"]
    args = " ".join(server["args"])
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert "--backend-store-uri=postgresql://" in args and (env["PGHOST"], env["PGPORT"]) == ("geogan-mlflow-db", "5432")
    assert "--serve-artifacts" in args and "--artifacts-destination=$(MLFLOW_ARTIFACTS_DESTINATION)" in args
    config = objects[("ConfigMap", "geogan-mlflow-config")]["data"]
    assert config["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert "geogan-mlflow" in config["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert ("StatefulSet", "geogan-mlflow-db") in objects and ("Service", "geogan-mlflow-db") in objects
    has_minio = ("Deployment", "geogan-minio") in objects
    assert has_minio == (overlay == "onprem")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mlflow_server_authenticates_with_credentials_from_secrets(rendered, overlay):
    """MLflow's basic-auth app, its config file mounted from a ConfigMap, every credential from a Secret."""
    objects = {(d["kind"], d["metadata"]["name"]): d for d in rendered[f"overlays/{overlay}"]}
    pod = objects[("Deployment", "geogan-mlflow")]["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert "--app-name=basic-auth" in server["args"]
    env = {e["name"]: e for e in server["env"]}
    from_secrets = {"MLFLOW_AUTH_ADMIN_USERNAME": (gp.MLFLOW_SECRET, "MLFLOW_TRACKING_USERNAME"),
                    "MLFLOW_AUTH_ADMIN_PASSWORD": (gp.MLFLOW_SECRET, "MLFLOW_TRACKING_PASSWORD"),
                    "MLFLOW_FLASK_SERVER_SECRET_KEY": ("geogan-mlflow-auth", "MLFLOW_FLASK_SERVER_SECRET_KEY"),
                    "PGPASSWORD": ("geogan-mlflow-db", "POSTGRES_PASSWORD")}
    for name, (secret, key) in from_secrets.items():
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": key}, name
        assert key in objects[("Secret", secret)]["data"], f"Secret {secret} has no {key}"
    config_path = Path(env["MLFLOW_AUTH_CONFIG_PATH"]["value"])
    (mount,) = [m for m in server["volumeMounts"] if m["mountPath"] == str(config_path.parent)]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    ini = configparser.ConfigParser()
    ini.read_string(objects[("ConfigMap", volume["configMap"]["name"])]["data"][config_path.name])
    assert ini["mlflow"]["authorization_function"] == "mlflow.server.auth:authenticate_request_basic_auth"
    assert urllib.parse.urlsplit(ini["mlflow"]["database_uri"]).password is None
    # The pipeline's steps (KFP and PyTorchJob) log in with the same Secret's user and password.
    assert {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} <= set(gp.MLFLOW_SECRET_KEYS)
    job_env = _containers(_docs((K8S / "jobs" / "pytorchjob-train.yaml").read_text())[0])[0]["env"]
    assert {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} <= {e["name"] for e in job_env}


@pytest.mark.parametrize("source", ["files", *OVERLAYS])
def test_no_password_on_a_command_line(rendered, source):
    """A password in a container's command or args shows in every process list; they come through the environment."""
    docs = ([d for p in _manifest_files() for d in _docs(p.read_text())] if source == "files"
            else rendered[f"overlays/{source}"])
    for doc in docs:
        for container in _containers(doc):
            line = " ".join(container.get("command", []) + container.get("args", []))
            where = f"{source}: {doc['kind']}/{doc['metadata']['name']}/{container['name']}"
            assert "PASSWORD" not in line.upper() and "SECRET" not in line.upper(), f"{where}: {line}"
            assert not re.search(r"://[^/\s@]*:[^/\s@]*@", line), f"{where}: credentials in a URI: {line}"
