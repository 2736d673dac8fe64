"""KFP components of the GeoGAN pipeline (thin shells over geogan.stages)."""

from components.stages import (evalset, evaluate, ingest, landmarks, register, split, train, train_judge,
                               train_pytorchjob)

__all__ = ["ingest", "landmarks", "train_judge", "split", "evalset", "train", "train_pytorchjob", "evaluate",
           "register"]
