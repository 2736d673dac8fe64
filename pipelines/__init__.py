"""Kubeflow pipelines of the project (compiled with `geogan pipeline compile`)."""
