"""Datasets: synthetic faces, ingestion, splits and the training dataset."""
