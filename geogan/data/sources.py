"""Where source files live: a local folder or s3://bucket/prefix, behind one small interface.

Ingestion lists a source once, then reads files by their path relative to its root. boto3 is imported
only for an s3:// source. Sources are picklable, so decode workers can read in parallel: each process
opens its own S3 client on first use.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol


class SourceError(ValueError):
    """A source that cannot be listed or read (missing folder, bucket, or file)."""


class Source(Protocol):
    """A tree of files addressed by '/'-separated paths relative to the source root."""

    uri: str

    def list_files(self) -> list[str]:
        """Every file under the root, as sorted relative paths."""
        ...

    def read_bytes(self, rel: str) -> bytes:
        """The content of one file; raises SourceError naming it when it cannot be read."""
        ...

    def describe(self, rel: str) -> str:
        """A full, human-readable location of `rel` for messages."""
        ...


class LocalSource:
    """A folder on the local file system."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser()
        self.uri = str(self.root)
        if not self.root.is_dir():
            raise SourceError(f"data source {self.uri}: not a folder")

    def list_files(self) -> list[str]:
        out = []
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]  # skip .git, .dvc and the like
            rel_dir = Path(folder).relative_to(self.root).as_posix()
            prefix = "" if rel_dir == "." else rel_dir + "/"
            out.extend(prefix + f for f in files if not f.startswith("."))
        return sorted(out)

    def read_bytes(self, rel: str) -> bytes:
        try:
            return (self.root / rel).read_bytes()
        except OSError as e:
            raise SourceError(f"{self.describe(rel)}: cannot read ({e.strerror or e})") from e

    def describe(self, rel: str) -> str:
        return str(self.root / rel)


class S3Source:
    """Objects under s3://bucket/prefix, through boto3 with its standard environment.

    The endpoint and credentials come from the environment as boto3 reads them (AWS_ENDPOINT_URL or
    AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, profiles),
    never from code or params.
    """

    def __init__(self, uri: str) -> None:
        if not uri.startswith("s3://"):
            raise SourceError(f"data source {uri}: not an s3:// URI")
        bucket, _, prefix = uri[len("s3://"):].partition("/")
        if not bucket:
            raise SourceError(f"data source {uri}: no bucket name (expected s3://bucket/prefix)")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.uri = f"s3://{bucket}/{self.prefix}"
        self._client: Any = None

    def __getstate__(self) -> dict:
        # A boto3 client is not picklable; each worker process makes its own.
        return {**self.__dict__, "_client": None}

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                import boto3
            except ImportError as e:
                raise SourceError(f"data source {self.uri}: S3 sources need boto3 (pip install boto3)") from e
            self._client = boto3.client("s3")
        return self._client

    def list_files(self) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        out = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
            for page in pages:
                out.extend(obj["Key"][len(self.prefix):] for obj in page.get("Contents", []))
        except (BotoCoreError, ClientError) as e:
            raise SourceError(f"data source {self.uri}: cannot list ({e})") from e
        return sorted(k for k in out if k and not k.endswith("/"))

    def read_bytes(self, rel: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.prefix + rel)["Body"].read()
        except (BotoCoreError, ClientError) as e:
            raise SourceError(f"{self.describe(rel)}: cannot read ({e})") from e

    def describe(self, rel: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{rel}"


def open_source(uri: str) -> Source:
    """A `Source` for a local folder or an s3://bucket/prefix URI.

    Args:
        uri: a folder path, or s3://bucket/prefix.
    Returns:
        The source; listing and reading happen on demand.
    Raises:
        SourceError: when a local folder does not exist or the URI is malformed.
    """
    if uri.startswith("s3://"):
        return S3Source(uri)
    if "://" in uri:
        raise SourceError(f"data source {uri}: only local folders and s3:// URIs are supported")
    return LocalSource(uri)
