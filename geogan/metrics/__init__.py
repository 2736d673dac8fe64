"""Evaluation metrics: FID/KID on pinned TF-Inception features, and the attribute classifier that judges transfer."""

from geogan.metrics.classifier import (
    AttributeClassifier,
    as_feature_extractor,
    build_classifier,
    load_classifier,
    penultimate_features,
    predict_proba,
    removal_success,
    save_classifier,
    train_classifier,
    transfer_success,
)
from geogan.metrics.fid import (
    FeatureExtractor,
    InceptionWeightsMissing,
    compute_fid_metrics,
    extract_features,
    feature_stats,
    frechet_distance,
    frechet_distance_features,
    inception_missing_message,
    kid,
    load_inception,
)

__all__ = [
    "AttributeClassifier", "FeatureExtractor", "InceptionWeightsMissing", "as_feature_extractor", "build_classifier",
    "compute_fid_metrics", "extract_features", "feature_stats", "frechet_distance", "frechet_distance_features", "inception_missing_message", "kid",
    "load_classifier", "load_inception", "penultimate_features", "predict_proba", "removal_success", "save_classifier",
    "train_classifier", "transfer_success",
]
