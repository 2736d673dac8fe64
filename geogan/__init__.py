"""GeoGAN: instance-level facial attribute transfer with geometry-aware flow, as a training pipeline.

The library imports with torch alone; MLflow, DVC and Kubeflow are used only by the
stage CLIs at the edges.
"""

__version__ = "0.1.0"
