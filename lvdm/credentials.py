"""Credentials written into URLs (`https://user:token@host/…`), kept out of what is printed or recorded.

A URL with userinfo is how many services hand out access (a private package index in
`PIP_INDEX_URL`, an MLflow server behind basic auth), and every layer prints or records URLs:
run records, the resolved `config.yaml`, MLflow artifacts, a submitted job's environment, error
messages. Everything that shows a URL passes it through `strip_userinfo`; where the credentials
are legitimately used (the MLflow probe, the package index), `basic_auth` turns them into the
`Authorization` header that urllib does not derive from a URL by itself.

Stdlib only, in `lvdm` (the lowest layer) because `lvdm weights fetch` needs it too.
"""

from __future__ import annotations

import base64
import re
from urllib.parse import unquote, urlsplit, urlunsplit

# scheme:// then the authority up to its last '@' (a password may hold a raw '@'), stopping at
# the path, query, fragment or whitespace: the userinfo of every URL inside a piece of text.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]*@")


def strip_userinfo(text: str) -> str:
    """`text` (a URL, or a message holding URLs) with every `user:password@` removed."""
    return _USERINFO.sub(r"\g<scheme>", text)


def has_userinfo(url: str) -> bool:
    return bool(_USERINFO.search(url))


def userinfo(url: str) -> tuple[str, str] | None:
    """(user, password) percent-decoded, as `https://user:password@host` carries them; None without."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return None
    return unquote(parts.username or ""), unquote(parts.password or "")


def split_userinfo(url: str) -> tuple[str, dict[str, str]]:
    """The URL without userinfo, and the headers that carry it instead (empty without)."""
    found = userinfo(url)
    if found is None:
        return url, {}
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host)), basic_auth(*found)


def basic_auth(user: str, password: str) -> dict[str, str]:
    """The HTTP Basic `Authorization` header for `user`, `password`."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}
