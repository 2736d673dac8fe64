"""Names the pipeline, its components and the k8s/ manifests share (tests/test_k8s.py checks they agree)."""

IMAGE = "ghcr.io/geogan/geogan-pipeline:0.1.0"
DATA_PVC = "geogan-data"
DATA_MOUNT = "/mnt/geogan"
S3_SECRET = "geogan-s3"
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")
MLFLOW_SECRET = "geogan-mlflow"
MLFLOW_SECRET_KEYS = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
SERVICE_ACCOUNT = "geogan-pipeline"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_LABEL = ("nvidia.com/gpu.present", "true")  # set by NVIDIA GPU feature discovery
SHM_SIZE = "8Gi"  # /dev/shm for NCCL and DataLoader workers (a container's default is 64 MiB)
TRAINING_RUNTIME = "geogan-torch"  # the Trainer v2 TrainingRuntime of k8s/base/trainingruntime.yaml
# Where the image's build writes its git commit (Dockerfile ARG GIT_COMMIT), read by geogan's run tags.
GIT_COMMIT_ENV = "GEOGAN_GIT_COMMIT"
