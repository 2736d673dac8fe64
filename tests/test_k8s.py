"""k8s/: every manifest validates offline, the overlays render, and the names agree with the pipeline."""

from __future__ import annotations

import configparser
import copy
import json
import fnmatch
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import pytest
import yaml

from components import runtime as rt
from components import settings as gp
from components import trainjob as tj
from tests.helpers.params import ROOT

kubernetes_validate = pytest.importorskip("kubernetes_validate")
jsonschema = pytest.importorskip("jsonschema")

K8S = ROOT / "k8s"
K8S_VERSION = "1.32.0"  # the kubectl on the machine image; kubernetes-validate bundles 1.25-1.37
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
TRAINER_KINDS = {"TrainJob", "TrainingRuntime", "ClusterTrainingRuntime"}  # trainer.kubeflow.org/v1alpha1
KSERVE_SCHEMAS = {"InferenceService": json.loads((K8S / "schemas" / "inferenceservice-v1beta1.schema.json").read_text()),
                  "ServingRuntime": json.loads((K8S / "schemas" / "servingruntime-v1alpha1.schema.json").read_text())}
# The fields of a KServe model spec that are not a container's: the rest is validated as a Kubernetes Container.
MODEL_ONLY_FIELDS = {"modelFormat", "runtime", "protocolVersion", "storageUri", "storage"}
WORKLOADS = {"Deployment", "StatefulSet", "Job", "DaemonSet"}


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def _docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def _validate(doc: dict) -> None:
    """Kubernetes objects against the bundled OpenAPI schemas (strict); Trainer v2 objects against its API models."""
    if doc["kind"] in TRAINER_KINDS:
        _validate_trainer(doc)
    elif doc["kind"] in KSERVE_SCHEMAS:
        _validate_kserve(doc)
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def _trainer_models():
    return pytest.importorskip("kubeflow_trainer_api.models", reason="kubeflow-trainer-api (the Trainer v2 API "
                               "models, a dependency of the kubeflow SDK) is not installed")


def _validate_trainer(doc: dict) -> None:
    """A TrainJob or (Cluster)TrainingRuntime against the Trainer v2 API models (kubeflow-trainer-api), strictly.

    The models are generated from the CRDs' OpenAPI schema; they check types and required fields, and
    a round trip must give the document back, so a field they do not know (a typo the API server would
    prune) fails too. Pod templates inside a runtime are also checked as batch/v1 Jobs against Kubernetes.
    """
    models = _trainer_models()
    assert doc["apiVersion"] == "trainer.kubeflow.org/v1alpha1", doc["apiVersion"]
    model = getattr(models, f"TrainerV1alpha1{doc['kind']}")
    parsed = model.from_dict(doc)
    assert parsed.to_dict() == doc, (f"{doc['kind']} {doc['metadata']['name']}: fields the Trainer API does not "
                                     "know, or of the wrong shape")
    for replicated in doc.get("spec", {}).get("template", {}).get("spec", {}).get("replicatedJobs", []):
        job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": replicated["name"]},
               "spec": replicated["template"]["spec"]}
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)


def _validate_kserve(doc: dict) -> None:
    """KServe objects against our schemas; their containers against the Kubernetes PodTemplate schema."""
    jsonschema.validate(doc, KSERVE_SCHEMAS[doc["kind"]])
    pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": doc["metadata"]["name"]},
                    "template": {"spec": {"containers": _containers(doc)}}}
    kubernetes_validate.validate(pod_template, K8S_VERSION, strict=True)


def _containers(doc: dict) -> list[dict]:
    if doc["kind"] in {"TrainingRuntime", "ClusterTrainingRuntime"}:
        return [c for r in doc["spec"]["template"]["spec"]["replicatedJobs"]
                for c in r["template"]["spec"]["template"]["spec"]["containers"]]
    if doc["kind"] in WORKLOADS:
        return doc["spec"]["template"]["spec"]["containers"]
    if doc["kind"] == "ServingRuntime":
        return doc["spec"]["containers"]
    if doc["kind"] == "InferenceService":  # the model spec is a container with KServe's fields beside
        model = doc["spec"]["predictor"]["model"]
        return [{"name": "kserve-container", "image": "set-by-the-runtime",
                 **{k: v for k, v in model.items() if k not in MODEL_ONLY_FIELDS}}]
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


def test_trainjob_file_is_what_the_pipeline_builds():
    m = Path(gp.DATA_MOUNT)
    command = rt.torchrun_command(rt.train_args(m / "params.yaml", "Mustache", m / "data/prepared",
                                                m / "data/landmarks", m / "data/splits/Mustache.json",
                                                m / "models/Mustache", m / "runs/Mustache"), python="python")
    expected = tj.trainjob_manifest("geogan-train-mustache", command, nodes=2, gpus_per_node=4)
    assert _docs((K8S / "jobs" / "trainjob-train.yaml").read_text()) == [expected], (
        "k8s/jobs/trainjob-train.yaml drifted from components.trainjob.trainjob_manifest")


@pytest.mark.parametrize("nodes,gpus", [(1, 0), (1, 8), (4, 2)])
def test_generated_trainjobs_validate(nodes, gpus):
    job = tj.trainjob_manifest(rt.k8s_name("geogan", "Mustache", "abc"), ["python", "-m", "torch.distributed.run"],
                               nodes, gpus, namespace="kubeflow", labels={"pipeline/runid": "abc"})
    _validate_trainer(job)
    trainer = job["spec"]["trainer"]
    assert trainer["numNodes"] == nodes and trainer["numProcPerNode"] == max(gpus, 1)
    assert trainer["resourcesPerNode"]["limits"].get("nvidia.com/gpu") == (str(gpus) if gpus else None)


@pytest.mark.parametrize("mutate", [
    lambda j: j["spec"].update(runtimeRefs=j["spec"].pop("runtimeRef")),
    lambda j: j["spec"]["trainer"].update(numNodes="two"),
    lambda j: j["spec"]["trainer"].update(nodes=2),
    lambda j: j["spec"]["runtimeRef"].pop("name"),
    lambda j: j["spec"]["trainer"]["resourcesPerNode"].update(limit={"cpu": "1"}),
    lambda j: j["spec"]["trainer"].update(command="python train.py"),
], ids=["spec-typo", "nodes-type", "unknown-field", "runtime-name", "resources-typo", "command-type"])
def test_trainer_validation_rejects_what_the_api_server_would(mutate):
    job = copy.deepcopy(_docs((K8S / "jobs" / "trainjob-train.yaml").read_text())[0])
    mutate(job)
    with pytest.raises(Exception) as error:  # pydantic's ValidationError, or the round trip's AssertionError
        _validate_trainer(job)
    assert error.type.__name__ in {"ValidationError", "AssertionError"}


def test_training_runtime_carries_what_the_trainjobs_rely_on():
    (runtime,) = _docs((K8S / "base" / "trainingruntime.yaml").read_text())
    assert runtime["kind"] == "TrainingRuntime" and runtime["metadata"]["name"] == gp.TRAINING_RUNTIME
    assert runtime["metadata"]["labels"]["trainer.kubeflow.org/framework"] == "torch"  # the SDK needs it
    assert "torch" in runtime["spec"]["mlPolicy"]  # the controller then sets torchrun's PET_* variables
    (node,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    assert node["name"] == "node" and node["template"]["metadata"]["labels"] == {
        "trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}
    pod = node["template"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "node" and container["image"] == gp.IMAGE
    assert pod["serviceAccountName"] == gp.SERVICE_ACCOUNT
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts[gp.DATA_MOUNT]]["persistentVolumeClaim"]["claimName"] == gp.DATA_PVC
    assert volumes[mounts["/dev/shm"]]["emptyDir"] == {"medium": "Memory", "sizeLimit": gp.SHM_SIZE}
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    expected = {**{k: {"name": gp.S3_SECRET, "key": k} for k in gp.S3_SECRET_KEYS},
                **{k: {"name": gp.MLFLOW_SECRET, "key": k} for k in gp.MLFLOW_SECRET_KEYS}}
    assert env == expected
    assert pod["tolerations"] == [{"key": gp.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    job = _docs((K8S / "jobs" / "trainjob-train.yaml").read_text())[0]
    assert job["spec"]["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": "TrainingRuntime",
                                         "name": runtime["metadata"]["name"]}


def test_trainer_models_know_the_fields_the_project_writes():
    models = _trainer_models()
    trainer = set(models.TrainerV1alpha1Trainer.model_fields[f].alias or f
                  for f in models.TrainerV1alpha1Trainer.model_fields)
    assert {"image", "command", "numNodes", "numProcPerNode", "resourcesPerNode"} <= trainer


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
    assert any(r["apiGroups"] == ["trainer.kubeflow.org"] and "trainjobs" in r["resources"]
               and {"create", "get", "watch"} <= set(r["verbs"]) for r in rules)
    assert any("pods/log" in r["resources"] and "get" in r["verbs"] for r in rules)  # the launcher streams logs
    runtime = objects[("TrainingRuntime", gp.TRAINING_RUNTIME)]
    assert runtime["metadata"]["namespace"] == "kubeflow"
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
    has_store = ("Deployment", "geogan-seaweedfs") in objects
    assert has_store == (overlay == "onprem")


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
    # The pipeline's steps (KFP and TrainJob pods) log in with the same Secret's user and password.
    assert {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} <= set(gp.MLFLOW_SECRET_KEYS)
    job_env = _containers(_docs((K8S / "base" / "trainingruntime.yaml").read_text())[0])[0]["env"]
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


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mlflow_database_is_migrated_before_the_server_starts(rendered, overlay):
    objects = {(d["kind"], d["metadata"]["name"]): d for d in rendered[f"overlays/{overlay}"]}
    pod = objects[("Deployment", "geogan-mlflow")]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (server,) = pod["containers"]
    assert init["command"] == ["mlflow", "db", "upgrade", "postgresql://"] and init["image"] == server["image"]
    pg = {e["name"]: e for e in server["env"] if e["name"].startswith("PG")}
    assert {e["name"]: e for e in init["env"]} == pg, "the migration must reach the server's database"
    assert {"cpu", "memory"} <= set(init["resources"]["limits"])


def test_onprem_object_store_is_seaweedfs_with_its_keys_from_the_secret(rendered):
    objects = {(d["kind"], d["metadata"]["name"]): d for d in rendered["overlays/onprem"]}
    pod = objects[("Deployment", "geogan-seaweedfs")]["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert server["image"].startswith("chrislusf/seaweedfs:") and "-s3" in server["args"]
    assert "-s3.port=8333" in server["args"] and "-s3.config=/config/s3.json" in server["args"]
    (init,) = pod["initContainers"]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in init["env"]}
    assert env == {"S3_ID": {"name": gp.S3_SECRET, "key": "AWS_ACCESS_KEY_ID"},
                   "S3_KEY": {"name": gp.S3_SECRET, "key": "AWS_SECRET_ACCESS_KEY"}}
    template = objects[("ConfigMap", "geogan-seaweedfs-s3")]["data"]["s3.json.template"]
    filled = template.replace("@ID@", "id").replace("@KEY@", "key")
    assert json.loads(filled)["identities"][0]["credentials"] == [{"accessKey": "id", "secretKey": "key"}]
    example = (K8S / "overlays" / "onprem" / "secrets" / "s3.env.example").read_text()
    assert "AWS_ENDPOINT_URL=http://geogan-seaweedfs:8333" in example
    kserve = objects[("Secret", gp.S3_SECRET)]["metadata"]["annotations"]["serving.kserve.io/s3-endpoint"]
    assert kserve == "geogan-seaweedfs:8333", "KServe's storage initializer reads the same S3 gateway"
    job = objects[("Job", "geogan-s3-buckets")]["spec"]["template"]["spec"]["containers"][0]
    buckets = objects[("ConfigMap", job["envFrom"][1]["configMapRef"]["name"])]["data"]["BUCKETS"].split()
    assert {"geogan-mlflow", "geogan-dvc", "geogan-data"} <= set(buckets)
    dvc_remote = (ROOT / ".dvc" / "config").read_text()
    assert "url = s3://geogan-dvc/" in dvc_remote, "the DVC team remote is a bucket the overlay creates"


def test_aws_overlay_uses_iam_roles_for_service_accounts_by_default(rendered):
    objects = {(d["kind"], d["metadata"]["name"]): d for d in rendered["overlays/aws"]}
    for account in (gp.SERVICE_ACCOUNT, "geogan-mlflow"):
        annotations = objects[("ServiceAccount", account)]["metadata"]["annotations"]
        assert annotations["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::"), account
    pod = objects[("Deployment", "geogan-mlflow")]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "geogan-mlflow"
    runtime = objects[("TrainingRuntime", gp.TRAINING_RUNTIME)]["spec"]["template"]["spec"]["replicatedJobs"][0]
    assert runtime["template"]["spec"]["template"]["spec"]["serviceAccountName"] == gp.SERVICE_ACCOUNT
    keys = dict(line.split("=", 1) for line in (K8S / "overlays" / "aws" / "secrets" / "s3.env.example")
                .read_text().splitlines() if line and not line.startswith("#"))
    assert keys["AWS_ACCESS_KEY_ID"] == keys["AWS_SECRET_ACCESS_KEY"] == "", "no static keys by default"


# ---------------------------------------------------------------- serving (KServe)


def _serving() -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for p in sorted((K8S / "serving").glob("*.yaml"))
            for d in _docs(p.read_text())}


def test_inferenceservice_reads_an_mlflow_model_from_the_artifact_store_with_our_runtime(rendered):
    objects = _serving()
    (isvc,) = [d for (kind, _), d in objects.items() if kind == "InferenceService"]
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    runtime = objects[("ServingRuntime", model["runtime"])]
    formats = [(f["name"], f.get("version")) for f in runtime["spec"]["supportedModelFormats"]]
    assert (model["modelFormat"]["name"], model["modelFormat"].get("version")) in formats
    assert model.get("protocolVersion", "v1") in runtime["spec"]["protocolVersions"]
    # The model folder comes from the on-prem overlay's MLflow artefact destination, read with its S3 Secret.
    onprem = {(d["kind"], d["metadata"]["name"]): d for d in rendered["overlays/onprem"]}
    destination = onprem[("ConfigMap", "geogan-mlflow-config")]["data"]["MLFLOW_ARTIFACTS_DESTINATION"]
    assert model["storageUri"].startswith(destination + "/") and model["storageUri"].endswith("/artifacts")
    account = objects[("ServiceAccount", predictor["serviceAccountName"])]
    for overlay in OVERLAYS:
        secrets = {(d["kind"], d["metadata"]["name"]): d for d in rendered[f"overlays/{overlay}"]}
        for ref in account["secrets"]:
            secret = secrets[("Secret", ref["name"])]
            assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(secret["data"]), (overlay, ref)
            assert "serving.kserve.io/s3-endpoint" in secret["metadata"]["annotations"], (overlay, ref)


def test_serving_runtime_runs_mlflow_models_serve_on_what_kserve_downloads():
    (runtime,) = [d for (kind, _), d in _serving().items() if kind == "ServingRuntime"]
    (container,) = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container"  # the name KServe injects the model and storage initializer into
    line = container["command"] + container["args"]
    assert line[:5] == ["mlflow", "models", "serve", "-m", "/mnt/models"]  # the storage initializer's folder
    assert line[line.index("--env-manager") + 1] == "local" and line[line.index("--host") + 1] == "0.0.0.0"
    port = int(line[line.index("--port") + 1])
    assert port == 8080 and container["ports"][0]["containerPort"] == port  # KServe's predictor port
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/ping", "port": port}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) & set(container["resources"]["limits"])


@pytest.mark.parametrize("mutate", [
    lambda d: d["spec"]["predictor"].update(modle=d["spec"]["predictor"].pop("model")),
    lambda d: d["spec"]["predictor"]["model"].update(storageUri="geogan-mlflow/artifacts"),
    lambda d: d["spec"]["predictor"]["model"].update(protocolVersion="v3"),
    lambda d: d["spec"]["predictor"]["model"]["modelFormat"].pop("name"),
    lambda d: d["metadata"].update(name="1-geogan"),
], ids=["spec-typo", "storage-uri", "protocol", "format-name", "name"])
def test_inferenceservice_schema_rejects_what_kserve_would(mutate):
    isvc = copy.deepcopy(next(d for (kind, _), d in _serving().items() if kind == "InferenceService"))
    mutate(isvc)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(isvc, KSERVE_SCHEMAS["InferenceService"])
