"""Keep secrets out of anything printed: URIs with passwords, configured secret values."""

from __future__ import annotations

import re
from urllib.parse import unquote

_USERINFO = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@"
)


def redact_uri(uri: str) -> str:
    """``mongodb://user:secret@host`` → ``mongodb://user:***@host``."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", uri)


def uri_password(uri: str) -> str:
    """The password inside a URI's user info, decoded; empty when there is none."""
    match = _USERINFO.search(uri)
    return unquote(match["pw"]) if match else ""


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """Replace every secret value, and any URI password, in ``text``."""
    if "://" in text:  # the URI pattern needs it: most log lines skip the regex
        text = redact_uri(text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
