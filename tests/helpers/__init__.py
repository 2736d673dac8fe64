"""Helpers the tests share: tiny params, data, the training state, processes, S3 and MLflow servers."""
