"""The audit trail: CloudTrail-shaped events, hash-chained per writer, signed, fail-closed."""

from keyhive.audit.chain import Head, Problem, Record, verify
from keyhive.audit.trail import AuditTrail
from keyhive.storage.work import unit_of_work  # requests open one; the trail commits it with their event

__all__ = ["AuditTrail", "Head", "Problem", "Record", "unit_of_work", "verify"]
