"""Passwords out of everything a user sees: a URL's password, or that of any URL in a text, as ***."""

import re
from urllib.parse import urlsplit, urlunsplit

# The password of a URL written in a text: scheme://user:PASSWORD@
_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@", re.IGNORECASE)


def redact(url):
    """`url` with any password replaced by ***, safe to log or print."""
    if not url or "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def redact_text(text, url=None):
    """`text` without the password of `url` (which may appear in it on its own), nor that of any URL written in it."""
    password = urlsplit(url).password if url and "://" in url else None
    text = text.replace(password, "***") if password else text
    return _USERINFO.sub(r"\1***@", text)
