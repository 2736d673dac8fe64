"""KFP components of the GeoGAN pipeline (thin shells over geogan.stages)."""

from components.stages import (evaluate, ingest, landmarks, register, split, train, train_classifier,
                               train_pytorchjob)

__all__ = ["ingest", "landmarks", "train_classifier", "split", "train", "train_pytorchjob", "evaluate", "register"]
