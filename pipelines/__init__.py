"""Kubeflow pipelines of the project, and `geogan-pipeline` (compile, submit) in pipelines.cli."""
