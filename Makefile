# Two commands for a newcomer:  `make demo` (set up + run the pipeline)  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup ui clean

# The tests start dvc, torchrun and mlflow from the venv. dvc.yaml's stages need no PATH:
# bin/geogan-stage finds .venv itself, so the README's `.venv/bin/dvc ...` works in any shell.
RUN := PATH="$(CURDIR)/$(BIN):$$PATH"

demo: setup  ## install everything, then run the whole pipeline on the embedded synthetic faces
	$(BIN)/dvc repro
	@echo
	@$(BIN)/geogan compare --params params.yaml || true
	@echo
	@echo "Done. Open the MLflow UI:  $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow/mlflow.db --port 5000"

# Workers: one per core, at most 4 (most tests wait on subprocesses: dvc, mlflow, kfp, torchrun).
test: setup  ## the test suite (what CI runs)
	$(RUN) python -m pytest -q -p no:cacheprovider -n auto --maxprocesses 4 --durations 10

setup: $(STAMP)

# Pinned, reproducible install. torch 2.14.1 + torchvision 0.29.1 are the CUDA builds
# (they also run on a CPU); see README "Install" for other platforms.
$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

ui:  ## the MLflow UI on the local store (docs/mlflow-ui.md)
	@echo "Training runs: http://127.0.0.1:5000/#/experiments?workflowType=machine_learning  (all attributes compared: the link \`geogan compare\` prints)"
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow/mlflow.db --port 5000

clean:  ## remove pipeline outputs and local runs (not the venv)
	rm -rf data/prepared data/landmarks data/splits models metrics plots registry runs mlflow
