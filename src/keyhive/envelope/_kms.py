"""The AWS Encryption SDK's KMS key providers, pointed at one KMS endpoint.

aws-encryption-sdk 3.x/4.x makes its own KMS clients: for each region it needs,
``boto3.Session(botocore_session=S).client("kms", region_name=R, config=C)``, with no
endpoint argument (``key_providers/kms.py``, ``add_regional_client``). Botocore then
finds an endpoint in AWS_ENDPOINT_URL_KMS / AWS_ENDPOINT_URL or the config file's
``services`` section, or uses AWS's own.

So the endpoint travels in the session: ``endpoint_session`` is a botocore Session whose
``create_client("kms", ...)`` fills in ``endpoint_url`` whenever the caller gave none.
Every regional client the SDK makes from it talks to that endpoint, signed with the
session's credentials. Nothing global changes: no environment variable, no patched SDK,
no other session or client affected, and an explicit ``endpoint_url`` still wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import botocore.session
from aws_encryption_sdk import DiscoveryAwsKmsMasterKeyProvider, StrictAwsKmsMasterKeyProvider
from aws_encryption_sdk.key_providers.kms import BaseKMSMasterKeyProvider

_SERVICE = "kms"


class _EndpointSession(botocore.session.Session):
    """A botocore session whose KMS clients default to one endpoint URL."""

    def __init__(self, endpoint_url: str) -> None:
        super().__init__()
        self._kms_endpoint_url = endpoint_url

    def create_client(self, service_name: str, *args: Any, **kwargs: Any) -> Any:
        # endpoint_url is create_client's sixth parameter; boto3 passes it by keyword.
        if service_name == _SERVICE and len(args) < 5 and kwargs.get("endpoint_url") is None:
            kwargs["endpoint_url"] = self._kms_endpoint_url
        return super().create_client(service_name, *args, **kwargs)


def make_session(endpoint_url: str | None, botocore_session: botocore.session.Session | None) -> botocore.session.Session:
    """The session every KMS client of one Envelope comes from."""
    if botocore_session is not None:
        if endpoint_url is not None:
            raise ValueError("give endpoint_url or botocore_session, not both: a session's KMS endpoint "
                             "comes from its own configuration (AWS_ENDPOINT_URL_KMS or the config file)")
        return botocore_session
    if endpoint_url is not None:
        return _EndpointSession(endpoint_url)
    return botocore.session.Session()


def is_key_arn(key_id: str) -> bool:
    return key_id.startswith("arn:") and ":key/" in key_id


def key_arns(session: botocore.session.Session, region: str | None, key_ids: Sequence[str]) -> tuple[str, ...]:
    """ARNs for key ids, aliases or alias ARNs (one DescribeKey each for those that are not ARNs).

    Decryption can be limited only to key ARNs: an encrypted data key names its key by ARN.
    An alias is resolved to the key it names now.
    """
    if all(is_key_arn(k) for k in key_ids):
        return tuple(key_ids)
    client = session.create_client(_SERVICE, region_name=region)
    return tuple(k if is_key_arn(k) else client.describe_key(KeyId=k)["KeyMetadata"]["Arn"] for k in key_ids)


def provider(session: botocore.session.Session, region: str | None,
             key_ids: Sequence[str]) -> BaseKMSMasterKeyProvider:
    """Strict when given keys (encrypt under all of them; decrypt only with them), else discovery.

    In discovery mode a message's data key is decrypted with whichever KMS key the message
    names; the caller's KMS permissions are then the only limit. ``region`` (else the
    session's) is where key ids that are not ARNs live; an ARN names its own region.
    """
    regions = [region] if region else []
    if key_ids:
        return StrictAwsKmsMasterKeyProvider(key_ids=list(key_ids), botocore_session=session, region_names=regions)
    return DiscoveryAwsKmsMasterKeyProvider(botocore_session=session, region_names=regions)
