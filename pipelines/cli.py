"""`geogan-pipeline`: compile the Kubeflow pipeline, or submit a run of it (on a workstation, not in a pod).

kfp is imported inside the functions that need it; the library (geogan/) never imports this package.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from components.settings import IMAGE, SERVICE_ACCOUNT
from geogan.config import ConfigError, check_attribute, load_config
from geogan.io import atomic_path

PACKAGE = Path("pipelines/geogan_pipeline.yaml")
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# Tools that print an image's digest from its registry, tried in this order.
DIGEST_TOOLS = (["crane", "digest"], ["skopeo", "inspect", "--format", "{{.Digest}}"],
                ["docker", "buildx", "imagetools", "inspect", "--format", "{{json .Manifest.Digest}}"])


def compile_pipeline(out: Path = PACKAGE) -> Path:
    """Compile pipelines/geogan_pipeline.py to `out` (written atomically)."""
    from kfp import compiler

    from pipelines.geogan_pipeline import geogan_pipeline

    with atomic_path(out) as tmp:
        compiler.Compiler().compile(geogan_pipeline, str(tmp))
    return out


def resolve_image(image: str, allow_tag: bool = False) -> str:
    """`image` pinned to its digest (name@sha256:...): KFP's cache key is the image string, so a tag rebuilt
    under the same name would hit stale cache entries.

    An image given by digest is kept; a tag is resolved with crane, skopeo or docker buildx,
    whichever is on PATH; `allow_tag` keeps a tag you promise is immutable.
    Raises:
        ConfigError: a tag that no tool could resolve (naming the fix).
    """
    if DIGEST.search(image) or allow_tag:
        return image
    tried = []
    for tool in DIGEST_TOOLS:
        if shutil.which(tool[0]) is None:
            continue
        result = subprocess.run([*tool, image], capture_output=True, text=True, timeout=60)
        digest = result.stdout.strip().strip('"')
        if result.returncode == 0 and re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            return f"{image.rsplit(':', 1)[0] if ':' in image.rsplit('/', 1)[-1] else image}@{digest}"
        # First line only: docker without buildx answers with its whole usage text.
        said = next((line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()), "no output")
        tried.append(f"{tool[0]}: {said[:160]}")
    why = "; ".join(tried) or "none of crane, skopeo, docker is on PATH"
    raise ConfigError(f"--image {image}: cannot resolve the tag to a digest ({why}); pass --image NAME@sha256:... "
                      "or --allow-tag if the tag is immutable")


def step_gpus(cfg: Any, gpus_per_node: int, cpu_only: bool) -> dict[str, int]:
    """GPU counts of the pipeline's GPU-capable steps, from the params: 0 where nothing would use one."""
    if cpu_only:
        return {"gpus_per_node": 0, "landmark_gpus": 0, "eval_gpus": 0}
    return {"gpus_per_node": gpus_per_node, "landmark_gpus": int(cfg.landmarks.backend == "fan"), "eval_gpus": 1}


def submit(host: str, attributes: Sequence[str], params: Path = Path("params.yaml"), experiment: str = "geogan",
           package: Path = PACKAGE, run_name: str | None = None, namespace: str | None = None,
           service_account: str = SERVICE_ACCOUNT, image: str = IMAGE, train_nodes: int = 1,
           gpus_per_node: int = 1, cpu_only: bool = False, allow_tag: bool = False, enable_caching: bool = True,
           client_factory: Callable[..., Any] | None = None) -> str:
    """Submit the compiled pipeline to a KFP endpoint; returns the run's URL.

    Args:
        host: the KFP API / UI address, e.g. http://localhost:8080 after a port-forward.
        attributes: attributes to train (each must be listed in params.yaml).
        params: the params.yaml whose content drives every step (as in `dvc repro`).
        package: the compiled pipeline (the committed YAML, checked by tests/test_pipeline.py).
        image: the project image; a tag is resolved to its digest (`resolve_image`).
        train_nodes: > 1 trains each attribute as a Trainer v2 TrainJob over that many nodes.
        gpus_per_node: GPUs per training pod (torchrun runs one process per GPU).
        cpu_only: no step asks for a GPU (a CPU cluster's smoke test).
        client_factory: builds the client (default kfp.Client; tests pass a fake).
    """
    cfg = load_config(params)
    if not attributes:
        raise ConfigError("give at least one --attribute")
    for attribute in attributes:
        check_attribute(cfg, attribute)
    if not Path(package).is_file():
        raise FileNotFoundError(f"{package}: compiled pipeline not found (run `geogan-pipeline compile`)")
    image = resolve_image(image, allow_tag)
    if client_factory is None:
        import kfp

        from geogan.tracking import probe

        answer = probe(f"{host.rstrip('/')}/apis/v2beta1/healthz")  # kfp.Client retries a closed port at length
        if isinstance(answer, str):
            raise ConfigError(f"KFP host {host} does not answer: {answer} (--host; a port-forward running?)")
        client_factory = kfp.Client
    client = client_factory(host=host, namespace=namespace)
    arguments = {"params_yaml": Path(params).read_text(encoding="utf-8"), "attributes": list(attributes),
                 "image": image, "train_nodes": train_nodes, **step_gpus(cfg, gpus_per_node, cpu_only)}
    result = client.create_run_from_pipeline_package(
        str(package), arguments=arguments, run_name=run_name or f"geogan-{'-'.join(attributes)}",
        experiment_name=experiment, namespace=namespace, enable_caching=enable_caching,
        service_account=service_account)
    return f"{host.rstrip('/')}/#/runs/details/{result.run_id}"


def main(argv: Sequence[str] | None = None) -> None:
    """`geogan-pipeline compile [--out FILE]` | `geogan-pipeline submit --host URL --attribute A ...`."""
    p = argparse.ArgumentParser(prog="geogan-pipeline", description="Compile or submit the Kubeflow pipeline.")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compile", help="compile pipelines/geogan_pipeline.py to YAML")
    c.add_argument("--out", type=Path, default=PACKAGE)
    s = sub.add_parser("submit", help="submit a run to a KFP endpoint and print its URL")
    s.add_argument("--host", required=True, help="KFP address, e.g. http://localhost:8080")
    s.add_argument("--attribute", action="append", required=True, dest="attributes", help="repeat for several")
    s.add_argument("--experiment", default="geogan")
    s.add_argument("--params", type=Path, default=Path("params.yaml"))
    s.add_argument("--package", type=Path, default=PACKAGE)
    s.add_argument("--run-name", default=None)
    s.add_argument("--namespace", default=None, help="KFP namespace (multi-user Kubeflow)")
    s.add_argument("--service-account", default=SERVICE_ACCOUNT)
    s.add_argument("--image", default=IMAGE, help="resolved to its digest unless given as NAME@sha256:...")
    s.add_argument("--allow-tag", action="store_true", help="keep a tag you know is immutable (no digest lookup)")
    s.add_argument("--train-nodes", type=int, default=1, help="> 1: train as a Trainer v2 TrainJob over N nodes")
    s.add_argument("--gpus-per-node", type=int, default=1)
    s.add_argument("--cpu-only", action="store_true", help="no step asks for a GPU (smoke test on a CPU cluster)")
    s.add_argument("--no-cache", action="store_true", help="disable KFP step caching for this run")
    args = p.parse_args(argv)
    try:
        if args.command == "compile":
            print(f"geogan-pipeline: compiled {compile_pipeline(args.out)}")
        else:
            print(submit(args.host, args.attributes, args.params, args.experiment, args.package, args.run_name,
                         args.namespace, args.service_account, args.image, args.train_nodes, args.gpus_per_node,
                         cpu_only=args.cpu_only, allow_tag=args.allow_tag, enable_caching=not args.no_cache))
    except (ConfigError, FileNotFoundError, ValueError) as e:
        sys.exit(f"geogan-pipeline: error: {e}")


if __name__ == "__main__":
    main()
