"""Keep credentials out of everything we show: URLs, log lines, error messages, tracebacks.

:func:`mask_url` hides the password of a URL's userinfo and the value of every credential-like
query parameter (``password=``, ``sslpassword=``, ``token=``...). Secrets it sees are remembered,
so :func:`scrub` (and the :class:`RedactFilter` on the CLI's log handlers) can also remove them
from free text, such as a database driver's error message.
"""

from __future__ import annotations

import logging
import os
import re
from urllib.parse import quote, quote_plus, unquote

MASK = "***"
# Query keys whose values are credentials (libpq's password/sslpassword, tokens, API keys).
CREDENTIAL_KEY = re.compile(r"pass|pwd|secret|token|key|auth|credential", re.IGNORECASE)
# Shorter secrets are masked inside URLs but not searched for in free text (too many false hits).
MIN_SCRUB_LENGTH = 4

_secrets: set[str] = set()


def _remember(secret: str | None) -> None:
    if secret and secret != MASK:
        for form in {secret, unquote(secret), quote(secret, safe=""), quote_plus(secret)}:
            if len(form) >= MIN_SCRUB_LENGTH:
                _secrets.add(form)


def mask_url(url: str) -> str:
    """``url`` with its password and credential-like query values replaced by ``***``.

    The userinfo ends at the *last* ``@`` of the authority, as in RFC 3986, so an unescaped ``@``
    inside the password (``u:p@ss@host``) is masked whole. Works on URLs no parser accepts.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _mask_query(url)
    # The userinfo ends at the last @ (a password may hold @ / ? #: masking too much is safe,
    # too little is not); the authority then ends at the first / ? # after it.
    at = -1 if rest.startswith("/") else rest.rfind("@")
    ends = [i for i in (rest.find(c, at + 1) for c in "/?#") if i != -1]
    authority_end = min(ends, default=len(rest))
    authority, tail = rest[:authority_end], rest[authority_end:]
    if "@" in authority:
        userinfo, host = authority.rsplit("@", 1)
        user, colon, password = userinfo.partition(":")
        if colon:
            _remember(password)
            userinfo = f"{user}:{MASK}"
        authority = f"{userinfo}@{host}"
    return f"{scheme}{sep}{authority}{_mask_query(tail)}"


def _mask_query(text: str) -> str:
    def repl(m: re.Match[str]) -> str:
        key, value = m.group(2), m.group(3)
        if not CREDENTIAL_KEY.search(key) or not value:
            return m.group(0)
        _remember(value)
        return f"{m.group(1)}{key}={MASK}"

    return re.sub(r"([?&;])([^=&;#]+)=([^&;#]*)", repl, text)


# Credentials that reach us through the environment (boto3 reads the AWS ones; libpq PGPASSWORD).
SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ACCESS_KEY_ID", "PGPASSWORD")


def remember_environment() -> None:
    """Note the credentials in the environment (``SECRET_ENV``) so :func:`scrub` removes them too."""
    for name in SECRET_ENV:
        _remember(os.environ.get(name))


def remember_url(url: str | None) -> None:
    """Note the secrets of ``url`` so :func:`scrub` removes them from any text."""
    if url:
        mask_url(url)


def scrub(text: str) -> str:
    """``text`` with every remembered secret (and any URL's password) replaced by ``***``."""
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return re.sub(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+", lambda m: mask_url(m.group(0)), text)


class RedactFilter(logging.Filter):
    """Scrubs secrets from every record (message, arguments and exception text) before it is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info:
            formatted = logging.Formatter().formatException(record.exc_info)
            record.exc_text = scrub(formatted)
            record.exc_info = None
        return True
