"""Pure evaluation of AWS JSON policy documents for KMS: key policies, identity policies.

Bytes and values in, values out: no I/O, no clock (time enters as the ``aws:CurrentTime``
and ``aws:EpochTime`` context keys), no globals but bounded caches.

    text ──parse_policy──▶ Policy ──validate_key_policy / validate_identity_policy
    RequestContext + Policy ──evaluate_key_policy──▶ Match
    RequestContext + [Policy] ──evaluate_identity_policies──▶ Match
    RequestContext + key policy + identity policies + grant ──decide──▶ Verdict
    Verdict ──access_denied_message──▶ "User: ... is not authorized to perform: ..."

Modules: ``_document`` (grammar), ``_template`` (wildcards, variables, ARN matching),
``_conditions`` (condition operators), ``_dates``, ``_evaluate`` (the decision).
"""

from keyhive.policy._conditions import Condition, Qualifier
from keyhive.policy._document import (
    Effect,
    Policy,
    Principals,
    Statement,
    parse_policy,
    validate_identity_policy,
    validate_key_policy,
)
from keyhive.policy._errors import PolicyError
from keyhive.policy._evaluate import (
    ContextValue,
    Match,
    RequestContext,
    Verdict,
    access_denied_message,
    decide,
    evaluate_identity_policies,
    evaluate_key_policy,
    lockout_safe,
    uses_time,
)

__all__ = [
    "Condition",
    "ContextValue",
    "Effect",
    "Match",
    "Policy",
    "PolicyError",
    "Principals",
    "Qualifier",
    "RequestContext",
    "Statement",
    "Verdict",
    "access_denied_message",
    "decide",
    "evaluate_identity_policies",
    "evaluate_key_policy",
    "lockout_safe",
    "parse_policy",
    "uses_time",
    "validate_identity_policy",
    "validate_key_policy",
]
