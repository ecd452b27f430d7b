"""Envelope encryption for applications, in the AWS Encryption SDK's message format.

A message gets a fresh data key from KMS (GenerateDataKey), is encrypted locally with
it in authenticated frames, and carries the data key encrypted under each chosen KMS
key; the plaintext data key is forgotten. Any one of those KMS keys can decrypt.

    from keyhive.envelope import Envelope

    box = Envelope(["arn:aws:kms:us-east-1:111122223333:key/..."], endpoint_url="http://127.0.0.1:8300")
    message = box.encrypt(b"secret", {"tenant": "t-7"})
    plaintext, context = box.decrypt(message, expected_context={"tenant": "t-7"})

The format is the AWS Encryption SDK's message format version 2 with a key-committing
algorithm suite (its default, ECDSA-signed; or, with ``signed=False``, the unsigned one),
under the commitment policy REQUIRE_ENCRYPT_REQUIRE_DECRYPT: the AWS Encryption SDKs and
``aws-encryption-cli`` read what this writes, and the other way round. The
aws-encryption-sdk package (the ``envelope`` extra) provides the KMS key providers, the
data key cache and the signing keys; the message bytes are written and read here, from
the published specification. See docs/envelope.md.
"""

from __future__ import annotations

try:
    import aws_encryption_sdk  # noqa: F401
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installation
    raise ModuleNotFoundError(
        "keyhive.envelope needs the AWS Encryption SDK: pip install 'keyhive[envelope]'", name=exc.name
    ) from None

from keyhive.envelope._envelope import FRAME_LENGTH, MAX_FRAME_LENGTH, CacheLimits, Envelope
from keyhive.envelope._errors import EnvelopeError

__all__ = ["FRAME_LENGTH", "MAX_FRAME_LENGTH", "CacheLimits", "Envelope", "EnvelopeError"]
