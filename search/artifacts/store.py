"""Open the artifact store a :class:`~search.core.locations.Location` names: Optuna's stores, checked once.

``file``: Optuna's :class:`~optuna.artifacts.FileSystemArtifactStore` with atomic writes (a killed
upload never leaves half a file under an artifact's name). ``s3``: Optuna's
:class:`~optuna.artifacts.Boto3ArtifactStore` on a boto3 client built the usual way, so the
endpoint (``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``, or ``endpoint_url`` in ``~/.aws/config``),
region and credentials (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, instance
roles) come from the environment and config files, never from a space file. ``gs``: Optuna's
:class:`~optuna.artifacts.GCSArtifactStore` (needs ``google-cloud-storage``; not tested against a
server here). Object keys are ``<prefix>/<artifact id>``.

A store is opened once per command (:func:`open_store`), checked there (the directory can be
created or read; the bucket exists and these credentials reach it), and the object is passed
down. Problems are one-line :class:`ArtifactStoreError` messages that never contain a credential.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any, BinaryIO

from optuna.artifacts import Boto3ArtifactStore, FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound

from search.core.errors import UserError
from search.core.locations import Location

log = logging.getLogger(__name__)


class ArtifactStoreError(UserError):
    """The artifact store cannot be opened, read or written."""


class ArtifactMissing(ArtifactStoreError):
    """An artifact a trial records is not in this store (removed, or in another store)."""


class FileStore(FileSystemArtifactStore):
    """A directory of artifacts whose writes are atomic: a temporary file renamed into place."""

    def __init__(self, location: Location) -> None:
        super().__init__(location.path)
        self.location = location
        self.root = Path(location.path)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        check_id(artifact_id)
        final = self.root / artifact_id
        tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        try:
            with open(tmp, "wb") as out:
                shutil.copyfileobj(content_body, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)


def check_id(artifact_id: str) -> None:
    """Refuse an id that is a path (ours are UUIDs): nothing is written outside the store's directory."""
    if not artifact_id or "/" in artifact_id or "\\" in artifact_id or artifact_id in (".", ".."):
        raise ValueError(f"invalid artifact id {artifact_id!r}")


class PrefixedStore:
    """A bucket store whose object keys carry a prefix (``s3://bucket/prefix``): ``prefix/<id>``."""

    def __init__(self, inner: Any, location: Location) -> None:
        self.inner = inner
        self.location = location

    def _key(self, artifact_id: str) -> str:
        return f"{self.location.prefix}/{artifact_id}" if self.location.prefix else artifact_id

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self.inner.open_reader(self._key(artifact_id))

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.inner.write(self._key(artifact_id), content_body)

    def remove(self, artifact_id: str) -> None:
        self.inner.remove(self._key(artifact_id))


def label(store: Any) -> str:
    """The store's URL, as shown to users (no credentials: URLs never carry them)."""
    location = getattr(store, "location", None)
    return location.url if isinstance(location, Location) else type(store).__name__


def open_store(location: Location, *, create: bool = False) -> Any:
    """The store at ``location``, checked: ``create`` makes a missing directory (workers do);
    readers get a one-line error for a directory that is not there or a bucket they cannot reach."""
    if location.scheme == "file":
        return _open_directory(location, create)
    if location.scheme == "s3":
        return _open_s3(location)
    return _open_gcs(location)


def _open_directory(location: Location, create: bool) -> FileStore:
    root = Path(location.path)
    where = f"artifacts {location.url}"
    if root.exists() and not root.is_dir():
        raise ArtifactStoreError(f"{where}: {root} is a file, not a directory")
    if not root.exists():
        if not create:
            return FileStore(location)  # nothing stored here yet: every lookup finds nothing
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArtifactStoreError(f"{where}: cannot create the directory ({exc.strerror or exc})") from None
    if not os.access(root, os.R_OK | os.X_OK):
        raise ArtifactStoreError(f"{where}: the directory is not readable by this user")
    if create and not os.access(root, os.W_OK):
        raise ArtifactStoreError(f"{where}: the directory is not writable by this user")
    return FileStore(location)


def _open_s3(location: Location) -> PrefixedStore:
    where = f"artifacts {location.url}"
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise ArtifactStoreError(f"{where}: boto3 is not installed; pip install 'strategy-search[s3]'") from None
    try:
        # Retries with backoff on throttling and dropped connections (boto3's "standard" mode); the
        # endpoint, region and credentials are boto3's own lookup (environment, ~/.aws, roles).
        # A session of its own: the environment and config files are read now, not when boto3's
        # default session happened to be made.
        client = boto3.session.Session().client("s3", config=Config(
            retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10, read_timeout=60))
        client.head_bucket(Bucket=location.bucket)
    except Exception as exc:  # noqa: BLE001 - botocore raises many kinds; each becomes one line
        raise ArtifactStoreError(f"{where}: {s3_problem(exc, location.bucket)}") from None
    return PrefixedStore(Boto3ArtifactStore(location.bucket, client=client), location)


def s3_problem(exc: BaseException, bucket: str) -> str:
    """What went wrong talking to S3, in words a user can act on (no credential in them)."""
    name = type(exc).__name__
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    if name == "NoCredentialsError" or name == "PartialCredentialsError":
        return ("no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE "
                "(~/.aws/credentials)")
    if code in ("404", "NoSuchBucket", "NotFound"):
        return f"bucket {bucket!r} does not exist at this endpoint (create it first, or fix the URL)"
    if code in ("403", "AccessDenied", "Forbidden", "AllAccessDisabled"):
        return f"access to bucket {bucket!r} is denied for these credentials"
    if code in ("InvalidAccessKeyId", "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken",
                "InvalidToken", "AuthorizationHeaderMalformed"):
        return f"the endpoint refused these credentials ({code})"
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError", "ReadTimeoutError"):
        return f"cannot reach the S3 endpoint ({_first_line(exc)}); check AWS_ENDPOINT_URL and the network"
    if name == "InvalidEndpointError" or name == "ValueError":
        return f"the S3 endpoint URL is not valid ({_first_line(exc)}); check AWS_ENDPOINT_URL"
    if name == "NoRegionError":
        return "no AWS region configured: set AWS_DEFAULT_REGION (any value for an S3-compatible server)"
    return f"S3 error: {code or name}: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _open_gcs(location: Location) -> PrefixedStore:
    where = f"artifacts {location.url}"
    try:
        from google.cloud import storage  # noqa: F401 - Optuna's GCS store needs it
        from optuna.artifacts import GCSArtifactStore
    except ImportError:
        raise ArtifactStoreError(f"{where}: google-cloud-storage is not installed; "
                                 "pip install google-cloud-storage") from None
    try:
        inner = GCSArtifactStore(location.bucket)
        if not inner.bucket_obj.exists():
            raise ArtifactStoreError(f"{where}: bucket {location.bucket!r} does not exist")
    except ArtifactStoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - google-auth raises many kinds; each becomes one line
        raise ArtifactStoreError(f"{where}: {type(exc).__name__}: {_first_line(exc)}") from None
    return PrefixedStore(inner, location)


def read_bytes(store: Any, artifact_id: str, limit: int = 1 << 30) -> bytes:
    """One artifact's bytes (at most ``limit``); :class:`ArtifactNotFound` when it is not there."""
    reader = store.open_reader(artifact_id)
    try:
        data = reader.read(limit + 1)
    finally:
        close = getattr(reader, "close", None)
        if close is not None:
            close()
    if len(data) > limit:
        raise ArtifactStoreError(f"artifact {artifact_id} is larger than {limit} bytes")
    return data


def is_not_found(exc: BaseException) -> bool:
    """Whether ``exc`` says an artifact is not in the store (Optuna's stores raise different things)."""
    if isinstance(exc, (ArtifactNotFound, FileNotFoundError)):
        return True
    code = str((getattr(exc, "response", None) or {}).get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")
