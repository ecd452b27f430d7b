"""Events Keyhive itself causes, in CloudTrail's AwsServiceEvent shape."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

EVENT_VERSION = "1.08"
KMS_SOURCE = "kms.amazonaws.com"


def iso_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def service_event(name: str, account: str, region: str, key_arn: str, details: dict[str, Any]) -> dict[str, Any]:
    """An event Keyhive itself causes (a key deleted or rotated on schedule), as CloudTrail's AwsServiceEvent."""
    return {
        "eventVersion": EVENT_VERSION,
        "userIdentity": {"accountId": account, "invokedBy": KMS_SOURCE},
        "eventTime": iso_now(),
        "eventSource": KMS_SOURCE,
        "eventName": name,
        "awsRegion": region,
        "sourceIPAddress": KMS_SOURCE,
        "userAgent": KMS_SOURCE,
        "requestParameters": None,
        "responseElements": None,
        "eventID": str(uuid.uuid4()),
        "readOnly": False,
        "resources": [{"accountId": account, "type": "AWS::KMS::Key", "ARN": key_arn}],
        "eventType": "AwsServiceEvent",
        "managementEvent": True,
        "recipientAccountId": account,
        "serviceEventDetails": details,
    }
