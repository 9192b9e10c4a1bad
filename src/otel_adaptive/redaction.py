"""The one place that decides what of a URL or setting may be shown.

Everything that prints, logs or returns a URL, a config or an error message that
may quote one goes through here: a password never leaves the process, whatever
the scheme (even one we reject, like ``valkey://user:pw@host``) and however the
value was spelled (percent-encoded, quoted by ``repr``, in ``?password=``).

Two layers, because neither alone is enough: :func:`mask_url` and
:func:`redact_text` remove passwords by their *position* in URL-like text, and a
:class:`Redactor` built from known URLs replaces the exact secret strings
anywhere they appear (a library error that quotes a password on its own).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote

#: What a hidden secret is shown as.
MASK = "***"
# Shorter pieces of a cut password are left alone: replacing them would garble text.
_MIN_PIECE = 4

# [scheme://]user:password@ starting a token. The password runs to the last '@'
# before whitespace: an unencoded '/' or '#' in a password must not leave its tail
# visible, and masking a little too much of an odd URL is the safe mistake.
_USERINFO = re.compile(
    r"(?:(?<=[\s'\"(=,\[])|^)"
    r"(?P<head>(?:[A-Za-z][A-Za-z0-9+.\-]*://)?[^\s/?#:@'\"]*):(?P<secret>\S*)@"
)
# ?password=... (redis-py's query option), and its common abbreviations.
_PASSWORD_OPTION = re.compile(
    r"(?P<head>[?&;](?:password|passwd|pwd)=)(?P<secret>[^&\s#'\"]*)", re.IGNORECASE
)


def mask_url(url: str) -> str:
    """``url`` with any password (userinfo or ``?password=``) shown as ``***``.

    Never raises and accepts any text: a malformed or unsupported URL is masked
    as well as a valid one.
    """
    return redact_text(url)


def redact_text(text: str) -> str:
    """``text`` with the password of every URL in it shown as ``***``."""
    text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    return _PASSWORD_OPTION.sub(lambda m: f"{m['head']}{MASK}", text)


def url_secrets(url: str) -> tuple[str, ...]:
    """The secret strings of ``url`` in every spelling a message might show them."""
    found: list[str] = []
    for pattern in (_USERINFO, _PASSWORD_OPTION):
        found += [match["secret"] for match in pattern.finditer(url)]
    _, _, query = url.partition("?")
    found += [value for name, value in parse_qsl(query) if name.lower() == "password"]
    return _spellings(found)


def _spellings(secrets: Iterable[str]) -> tuple[str, ...]:
    spelled: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        for variant in (secret, unquote(secret)):
            # A URL parser may cut an unencoded password at '/', '?', '#' or '@' and
            # quote one piece alone (as a port, say): the longer pieces count too.
            pieces = [p for p in re.split(r"[/?#@]", variant) if len(p) >= _MIN_PIECE]
            for text in (variant, *pieces):
                spelled.add(text)
                spelled.add(repr(text)[1:-1])  # as quoted inside a repr()
    # Longest first, so a secret containing another is replaced whole.
    return tuple(sorted((s for s in spelled if s), key=len, reverse=True))


class Redactor:
    """Removes known secrets (and any URL password) from text meant to be shown."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = _spellings(secrets)

    @classmethod
    def for_urls(cls, *urls: str | None) -> Redactor:
        """A redactor for the secrets of these URLs (``None`` entries are skipped)."""
        return cls(s for url in urls if url for s in url_secrets(url))

    def __call__(self, text: str) -> str:
        text = redact_text(text)
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def __repr__(self) -> str:
        return f"Redactor({len(self._secrets)} secret spellings)"
