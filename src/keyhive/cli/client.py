"""A small client for Keyhive's admin API, used by the operator commands.

Requests that need an identity are signed with Signature V4 using the standard
AWS credential chain (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, profiles ...).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

from keyhive.server import DEFAULT_PORT, DEFAULT_REGION

ENDPOINT_ENV = "KEYHIVE_ENDPOINT"


class ClientError(Exception):
    """The server refused the request or could not be reached; the message is for people."""


def default_endpoint() -> str:
    return os.environ.get(ENDPOINT_ENV, f"http://127.0.0.1:{DEFAULT_PORT}")


def call(endpoint: str, method: str, path: str, body: dict[str, Any] | None = None, *, sign: bool = False,
         raw: bool = False) -> tuple[int, Any]:
    """(HTTP status, JSON reply) of one admin API call; with ``raw``, the reply's bytes when it succeeds."""
    url = endpoint.rstrip("/") + path
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if sign:
        headers = _signed_headers(method, url, data or b"", headers)
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            data = response.read()
            return response.status, data if raw else json.loads(data or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            doc = json.loads(exc.read() or b"{}")
        except ValueError:
            doc = {}
        return exc.code, doc
    except (urllib.error.URLError, OSError) as exc:
        raise ClientError(f"cannot reach Keyhive at {endpoint}: {getattr(exc, 'reason', exc)}") from None


def error_text(doc: dict[str, Any]) -> str:
    return f"{doc.get('__type', 'Error')}: {doc.get('message', '')}".rstrip(": ")


def _signed_headers(method: str, url: str, data: bytes, headers: dict[str, str]) -> dict[str, str]:
    import botocore.session
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    session = botocore.session.Session()
    credentials = session.get_credentials()
    if credentials is None:
        raise ClientError("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    region = session.get_config_variable("region") or DEFAULT_REGION
    request = AWSRequest(method=method, url=url, data=data, headers=headers)
    SigV4Auth(credentials, "kms", region).add_auth(request)
    return dict(request.headers.items())
