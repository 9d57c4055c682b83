"""Where a study's trial files live: an artifact-store URL, parsed and checked (no I/O, no imports of ours).

``file:///path`` (or a plain path: a local or NFS directory), ``s3://bucket/prefix`` (S3 or any
S3-compatible server) and ``gs://bucket/prefix`` (Google Cloud Storage). The URL names *where*,
never *who*: credentials and endpoints come from the usual AWS/Google environment variables and
config files, so a URL with a user, password or query string is refused (it would end up in
space files, shell history and logs). :mod:`search.artifacts.store` opens the store a parsed URL names.
"""

from __future__ import annotations

import os.path
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from search.core.errors import UserError

SCHEMES = ("file", "s3", "gs")
# S3's rules for new buckets (GCS's are close): 3-63 of a-z 0-9 . -, starting and ending with a letter or digit.
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
HELP = "file:///path (a local or shared directory), s3://bucket/prefix or gs://bucket/prefix"


class ArtifactsURLError(UserError):
    """An artifacts URL that cannot name a store."""


@dataclass(frozen=True)
class Location:
    """A parsed artifacts URL: a directory (``file``) or a bucket and key prefix (``s3``, ``gs``)."""

    scheme: str
    path: str = ""  # file: the absolute directory
    bucket: str = ""
    prefix: str = ""  # object keys start with "<prefix>/" (no leading or trailing slash)

    @property
    def url(self) -> str:
        """The canonical URL (carries no credentials by construction)."""
        if self.scheme == "file":
            return Path(self.path).as_uri()
        return f"{self.scheme}://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")

    def __str__(self) -> str:
        return self.url


def parse_location(text: object, *, base_dir: Path | None = None, what: str = "--artifacts") -> Location:
    """``text`` as a :class:`Location`; a relative directory is relative to ``base_dir`` (else the cwd).

    Errors are one line naming ``what`` (the option or space key) and never repeat a credential.
    """
    if not isinstance(text, str) or not text.strip():
        raise ArtifactsURLError(f"{what}: expected a URL ({HELP}), got {text!r}")
    text = text.strip()
    if "\0" in text or "\n" in text:
        raise ArtifactsURLError(f"{what}: the URL holds a control character")
    scheme, sep, rest = text.partition("://")
    if not sep:
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", text):
            raise ArtifactsURLError(f"{what}: {scheme.split(':')[0]}: is not a supported scheme; use {HELP}")
        return _directory(text, base_dir, what)
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise ArtifactsURLError(f"{what}: {scheme}:// is not a supported scheme; use {HELP}")
    if "?" in rest or "#" in rest:
        raise ArtifactsURLError(f"{what}: {scheme}:// URLs take no query or fragment (the endpoint and "
                                "credentials come from the environment, e.g. AWS_ENDPOINT_URL, AWS_PROFILE)")
    if scheme == "file":
        host, slash, path = rest.partition("/")
        if host not in ("", "localhost"):
            raise ArtifactsURLError(f"{what}: file:// URLs name a directory on this machine (file:///path), "
                                    f"not on host {host.rsplit('@', 1)[-1]!r}; mount it and give its path")
        return _directory(unquote("/" + path), None, what)
    authority, _, prefix = rest.partition("/")
    if "@" in authority:
        raise ArtifactsURLError(
            f"{what}: credentials do not belong in the artifacts URL ({scheme}://***@{authority.rsplit('@', 1)[1]}); "
            + ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE" if scheme == "s3"
               else "set GOOGLE_APPLICATION_CREDENTIALS"))
    if not BUCKET.fullmatch(authority) or ".." in authority:
        raise ArtifactsURLError(f"{what}: {authority!r} is not a valid bucket name "
                                "(3-63 characters: lowercase letters, digits, dots and hyphens)")
    prefix = prefix.strip("/")
    parts = prefix.split("/") if prefix else []
    if any(p in ("", ".", "..") for p in parts):
        raise ArtifactsURLError(f"{what}: the key prefix {prefix!r} has an empty, '.' or '..' part")
    if len(prefix) > 512:
        raise ArtifactsURLError(f"{what}: the key prefix is longer than 512 characters")
    return Location(scheme, bucket=authority, prefix=prefix)


def _directory(path: str, base_dir: Path | None, what: str) -> Location:
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = (base_dir or Path.cwd()) / p
    # Normalised without touching the disk: the directory may not exist yet (a worker creates it).
    return Location("file", path=os.path.normpath(str(p)))
