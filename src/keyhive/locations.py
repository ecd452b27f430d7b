"""Where the data is, for messages: storage locations shown without their passwords."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

from keyhive.storage.base import is_postgres_url


def describe_location(location: str | Path) -> str:
    """Where the data is, for messages: a URL loses its password (in the authority or the query).

    A URL too malformed to take apart shows only its scheme, so nothing in it can leak.
    """
    if not is_postgres_url(location):
        return str(location)
    try:
        parts = urllib.parse.urlsplit(str(location))
    except ValueError:  # e.g. an unclosed "[" in the host
        return str(location).partition("://")[0] + "://***"
    if parts.password is not None:
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{parts.netloc.rpartition('@')[2]}")
    query = "&".join("password=***" if urllib.parse.unquote(item.partition("=")[0]) == "password" else item
                     for item in parts.query.split("&"))
    return urllib.parse.urlunsplit(parts._replace(query=query))


def hide_password(text: str, location: str) -> str:
    """``text`` with a postgresql:// ``location``, and any password in it, as :func:`describe_location` shows them."""
    if not is_postgres_url(location):
        return text
    text = text.replace(location, describe_location(location))
    for secret in _passwords(location):
        text = text.replace(secret, "***")
    return text


def _passwords(url: str) -> set[str]:
    """Every form of the password in a postgresql:// URL (in the authority or the query), raw and decoded."""
    rest = url.partition("://")[2]
    authority = rest.split("/", 1)[0].split("?", 1)[0]
    found = {authority.rpartition("@")[0].partition(":")[2]} if "@" in authority else set()
    for item in rest.partition("?")[2].split("&"):
        key, _, value = item.partition("=")
        if urllib.parse.unquote(key) == "password":
            found.add(value)
    return {form for secret in found for form in (secret, urllib.parse.unquote(secret)) if form}
