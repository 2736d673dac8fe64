"""Evaluation metrics: the judge, FID/KID on pinned TF-Inception features, geometry, identity, and their registry."""
