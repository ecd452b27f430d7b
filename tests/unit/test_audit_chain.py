"""keyhive.audit.chain: hash chains per writer, signed heads, references between writers.

Pure: records are made by hand (through ``Chain``), signed with real Ed25519 keys
from keyhive.crypto, tampered with in each way an attacker with write access to
the store could, and verified.  Every tamper must name the first bad record.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from typing import Any, Callable

import pytest

from keyhive import crypto
from keyhive.audit.chain import (
    Chain,
    Head,
    Problem,
    Record,
    canonical,
    genesis,
    head_message,
    link,
    verify,
)

PRIVATE, PUBLIC = crypto.new_signing_key()
OTHER_PRIVATE, OTHER_PUBLIC = crypto.new_signing_key()


def checker(public: bytes) -> Callable[[bytes, bytes], bool]:
    return lambda message, signature: crypto.signature_valid(public, message, signature)


TRUSTED = checker(PUBLIC)


def event(n: int, **extra: Any) -> dict[str, Any]:
    return {"eventName": "Encrypt", "eventID": f"id-{n}", "eventTime": "2025-01-01T00:00:00Z",
            "requestParameters": {"keyId": "k", "encryptionContext": {"n": str(n)}}, **extra}


def sign(writer: str, seq: int, hash_hex: str, private: bytes = PRIVATE) -> str:
    return base64.b64encode(crypto.sign(private, head_message(writer, seq, hash_hex))).decode()


def signed_head(record: Record, private: bytes = PRIVATE) -> Head:
    return Head(record.writer, record.seq, record.hash, sign(record.writer, record.seq, record.hash, private))


def build(writer: str, events: list[dict[str, Any]]) -> list[Record]:
    chain = Chain(writer)
    records = []
    for e in events:
        record = chain.extend(e)
        chain.accept(record)
        records.append(record)
    return records


def relink(records: list[Record], start: int = 0) -> list[Record]:
    """Recompute prev and hash from ``start`` on, as an attacker who edits and rehashes would."""
    out = list(records[:start])
    previous = out[-1].hash if out else genesis(records[0].writer)
    for r in records[start:]:
        r = Record(r.writer, r.seq, previous, link(previous, r.seq, r.event), r.event)
        out.append(r)
        previous = r.hash
    return out


def trail(writer: str = "w1", n: int = 8) -> tuple[list[Record], list[Head]]:
    records = build(writer, [event(i) for i in range(1, n + 1)])
    return records, [signed_head(records[-1])]


def first(problems: list[Problem]) -> tuple[str, int]:
    assert problems, "tampering went undetected"
    return problems[0].writer, problems[0].seq


# -- the primitives -----------------------------------------------------------------
def test_canonical_is_sorted_compact_utf8_and_unambiguous() -> None:
    assert canonical({"b": 1, "a": {"d": [1, 2], "c": "é"}}) == '{"a":{"c":"é","d":[1,2]},"b":1}'.encode()
    assert canonical({"ab": "c"}) != canonical({"a": "bc"})
    assert canonical({"a": 1, "b": 2}) == canonical({"b": 2, "a": 1})


def test_link_is_sha256_of_prev_seq_and_event() -> None:
    prev = genesis("w1")
    assert prev == hashlib.sha256(b"keyhive-audit-v1|w1").hexdigest()
    expected = hashlib.sha256(bytes.fromhex(prev) + (1).to_bytes(8, "big") + canonical(event(1))).hexdigest()
    assert link(prev, 1, event(1)) == expected
    assert link(prev, 2, event(1)) != expected  # the position is part of the hash
    assert link(genesis("w2"), 1, event(1)) != expected  # so is the writer
    assert link(prev, 1, event(1, errorCode="X")) != expected


def test_head_message_names_writer_seq_and_hash() -> None:
    assert head_message("w1", 7, "ab" * 32) == b"keyhive-audit-head-v1|w1|7|" + b"ab" * 32


def test_chain_advances_only_on_accept() -> None:
    chain = Chain("w1")
    first_record = chain.extend(event(1))
    assert (first_record.seq, first_record.prev) == (1, genesis("w1"))
    assert chain.extend(event(1)) == first_record  # not accepted: the same record again
    chain.accept(first_record)
    second = chain.extend(event(2))
    assert (second.seq, second.prev) == (2, first_record.hash)


def test_record_and_head_round_trip_through_json() -> None:
    records, heads = trail(n=2)
    assert [Record.from_json(r.to_json()) for r in records] == records
    assert Head.from_json(heads[0].to_json()) == heads[0]
    assert set(records[0].to_json()) == {"writer", "seq", "prev", "hash", "event"}
    assert set(heads[0].to_json()) == {"writer", "seq", "hash", "signature", "signed_seq", "signed_hash"}
    carried = Head("w1", 9, "cd" * 32, "c2ln", 4, "ab" * 32)
    assert Head.from_json(carried.to_json()) == carried and carried.checkpoint == (4, "ab" * 32)
    assert heads[0].checkpoint == (heads[0].seq, heads[0].hash)


def test_problem_names_writer_and_record() -> None:
    assert str(Problem("w1", 3, "hash mismatch")) == "writer w1 record 3: hash mismatch"


# -- an intact trail ----------------------------------------------------------------------
def test_intact_trail_verifies_in_any_order() -> None:
    records, heads = trail()
    assert verify(records, heads, TRUSTED) == []
    assert verify(list(reversed(records)), heads, TRUSTED) == []  # chain order is by seq, not by list order
    assert verify(records, heads, None) == []


def test_empty_trail_verifies() -> None:
    assert verify([], [], TRUSTED) == []


# -- each kind of tampering, one writer -------------------------------------------------------
def test_edited_event_field() -> None:
    records, heads = trail()
    records[3] = dataclasses.replace(records[3], event=event(4, eventName="Decrypt"))
    problems = verify(records, heads, TRUSTED)
    assert first(problems) == ("w1", 4)
    assert "hash mismatch" in problems[0].reason


@pytest.mark.parametrize("field", ["prev", "hash"])
def test_edited_link_fields(field: str) -> None:
    records, heads = trail()
    records[2] = dataclasses.replace(records[2], **{field: "00" * 32})
    assert first(verify(records, heads, TRUSTED)) == ("w1", 3)


def test_edited_then_rehashed_chain_breaks_the_signed_head() -> None:
    records, heads = trail()
    records[4] = dataclasses.replace(records[4], event=event(5, eventName="Decrypt"))
    records = relink(records, 4)
    problems = verify(records, heads, TRUSTED)
    assert first(problems) == ("w1", 8)
    assert "head does not match" in problems[0].reason
    # ... and rewriting the head too needs the signing key.
    forged = Head("w1", 8, records[-1].hash, heads[0].signature)
    assert first(verify(records, [forged], TRUSTED)) == ("w1", 8)
    unsigned = Head("w1", 8, records[-1].hash, None)
    assert verify(records, [unsigned], TRUSTED) == [Problem("w1", 8, "head is not signed")]


def test_rehashed_and_signed_with_another_key_fails_only_with_the_trusted_key() -> None:
    records, _ = trail()
    records[1] = dataclasses.replace(records[1], event=event(2, eventName="Decrypt"))
    records = relink(records, 1)
    heads = [signed_head(records[-1], OTHER_PRIVATE)]
    assert verify(records, heads, checker(OTHER_PUBLIC)) == []  # the attacker's own key vouches for it
    problems = verify(records, heads, TRUSTED)
    assert problems == [Problem("w1", 8, "head signature does not verify")]


def test_deleted_middle_record() -> None:
    records, heads = trail()
    del records[4]
    problems = verify(records, heads, TRUSTED)
    assert first(problems) == ("w1", 5)
    assert "missing" in problems[0].reason


def test_deleted_first_record() -> None:
    records, heads = trail()
    del records[0]
    assert first(verify(records, heads, TRUSTED)) == ("w1", 1)


def test_reordered_records_swapped_events() -> None:
    records, heads = trail()
    a, b = records[2], records[3]
    records[2], records[3] = (dataclasses.replace(a, event=b.event), dataclasses.replace(b, event=a.event))
    assert first(verify(records, heads, TRUSTED)) == ("w1", 3)


def test_reordered_records_swapped_positions() -> None:
    records, heads = trail()
    a, b = records[5], records[6]
    records[5], records[6] = dataclasses.replace(b, seq=6), dataclasses.replace(a, seq=7)
    assert first(verify(records, heads, TRUSTED)) == ("w1", 6)


def test_inserted_record_renumbered_in_the_middle() -> None:
    records, heads = trail()
    forged = Record("w1", 4, records[2].hash, link(records[2].hash, 4, event(99)), event(99))
    shifted = [dataclasses.replace(r, seq=r.seq + 1) for r in records[3:]]
    problems = verify(records[:3] + [forged] + shifted, heads, TRUSTED)
    assert first(problems) == ("w1", 5)  # the forgery links; the record after it no longer does


def test_inserted_record_with_a_duplicate_seq() -> None:
    records, heads = trail()
    forged = Record("w1", 3, records[1].hash, link(records[1].hash, 3, event(99)), event(99))
    problems = verify(records + [forged], heads, TRUSTED)
    assert first(problems) == ("w1", 3)


def test_record_appended_after_the_head() -> None:
    records, heads = trail()
    forged = Record("w1", 9, records[-1].hash, link(records[-1].hash, 9, event(9)), event(9))
    problems = verify(records + [forged], heads, TRUSTED)
    assert first(problems) == ("w1", 9)
    assert "appended" in problems[0].reason


def test_tail_cut_with_the_head_left_as_is() -> None:
    records, heads = trail()
    problems = verify(records[:5], heads, TRUSTED)
    assert first(problems) == ("w1", 6)
    assert "tail cut" in problems[0].reason


def test_tail_cut_with_the_head_rewritten_or_deleted() -> None:
    records, heads = trail()
    cut = records[:5]
    moved = Head("w1", 5, cut[-1].hash, heads[0].signature)  # the old signature does not cover record 5
    assert verify(cut, [moved], TRUSTED) == [Problem("w1", 5, "head signature does not verify")]
    assert first(verify(cut, [], TRUSTED)) == ("w1", 5)
    assert "no head" in verify(cut, [], TRUSTED)[0].reason


@pytest.mark.parametrize("signature", [
    lambda s: s[:10] + ("A" if s[10] != "A" else "B") + s[11:],  # one character changed
    lambda s: "not base64!",
    lambda s: "",
    lambda s: base64.b64encode(b"\x00" * 64).decode(),
])
def test_tampered_head_signature(signature: Callable[[str], str]) -> None:
    records, heads = trail()
    assert heads[0].signature is not None
    bad = dataclasses.replace(heads[0], signature=signature(heads[0].signature))
    assert verify(records, [bad], TRUSTED) == [Problem("w1", 8, "head signature does not verify")]


def test_head_edited_to_name_another_writer() -> None:
    records, heads = trail()
    assert first(verify(records, [dataclasses.replace(heads[0], writer="w9")], TRUSTED)) == ("w1", 8)


def test_unsigned_head_of_the_last_writer_fails_with_a_key_and_passes_without() -> None:
    records, _ = trail()
    unsigned = [Head("w1", 8, records[-1].hash, None)]
    assert verify(records, unsigned, TRUSTED) == [Problem("w1", 8, "head is not signed")]
    assert verify(records, unsigned, None) == []


# -- signing at intervals: a head carries the last signed checkpoint forward ------------------------
def carried(records: list[Record], signed_at: int, private: bytes = PRIVATE) -> Head:
    """The head after records[-1] that carries the signature made at record ``signed_at``."""
    checkpoint = records[signed_at - 1]
    last = records[-1]
    return Head(last.writer, last.seq, last.hash, sign(last.writer, signed_at, checkpoint.hash, private),
                signed_at, checkpoint.hash)


def test_head_carrying_an_older_checkpoint_verifies() -> None:
    records, _ = trail()
    assert verify(records, [carried(records, 5)], TRUSTED) == []


def test_checkpoint_signed_with_another_key() -> None:
    records, _ = trail()
    assert verify(records, [carried(records, 5, OTHER_PRIVATE)], TRUSTED) == [
        Problem("w1", 5, "head signature does not verify")]


def test_signed_records_rewritten_below_the_checkpoint() -> None:
    records, _ = trail()
    head = carried(records, 5)
    records[2] = dataclasses.replace(records[2], event=event(3, eventName="Decrypt"))
    records = relink(records, 2)
    forged = dataclasses.replace(head, hash=records[-1].hash)  # head moved to the rewritten end
    problems = verify(records, [forged], TRUSTED)
    assert first(problems) == ("w1", 5)
    assert "checkpoint does not match" in problems[0].reason


def test_tail_cut_below_the_checkpoint_with_the_head_moved() -> None:
    records, _ = trail()
    head = carried(records, 6)
    cut = records[:4]
    moved = dataclasses.replace(head, seq=4, hash=cut[-1].hash)
    problems = verify(cut, [moved], TRUSTED)
    assert first(problems) == ("w1", 5)
    assert "past the chain's end" in problems[0].reason


@pytest.mark.parametrize(("signed_seq", "named"), [(0, 8), (-1, 8), ("5", 8), (True, 8), (9, 9)])
def test_checkpoint_outside_the_chain(signed_seq: Any, named: int) -> None:
    records, _ = trail()
    head = dataclasses.replace(carried(records, 5), signed_seq=signed_seq)
    problems = verify(records, [head], TRUSTED)
    assert first(problems) == ("w1", named)


def test_unsigned_tail_after_the_checkpoint_is_only_chained() -> None:
    """The documented limit: what the live writer chained after its last signature is
    vouched for by nothing but the head itself (docs/audit.md, "Tamper evidence")."""
    records, _ = trail()
    head = carried(records, 5)
    records[6] = dataclasses.replace(records[6], event=event(7, eventName="Decrypt"))
    records = relink(records, 6)
    assert first(verify(records, [head], TRUSTED)) == ("w1", 8)  # the head as stored still catches it
    assert verify(records, [dataclasses.replace(head, hash=records[-1].hash)], TRUSTED) == []


# -- several writers: a new writer names the heads of the ones before -------------------------------
def two_writers(w1_signed: bool = True) -> tuple[list[Record], list[Head]]:
    w1 = build("w1", [event(i) for i in range(1, 7)])
    head1 = signed_head(w1[-1]) if w1_signed else Head("w1", 6, w1[-1].hash, None)
    started = {"eventName": "AuditWriterStarted", "eventID": "s2",
               "additionalEventData": {"writer": "w2",
                                       "previousWriters": [{"writer": "w1", "seq": 6, "hash": w1[-1].hash}]}}
    w2 = build("w2", [started] + [event(i) for i in range(10, 14)])
    return w1 + w2, [head1, signed_head(w2[-1])]


def test_two_intact_writers_verify() -> None:
    records, heads = two_writers()
    assert verify(records, heads, TRUSTED) == []


def test_deleting_an_earlier_writer_entirely_is_named_by_the_later_one() -> None:
    records, heads = two_writers()
    w2_only = [r for r in records if r.writer == "w2"]
    problems = verify(w2_only, [h for h in heads if h.writer == "w2"], TRUSTED)
    assert first(problems) == ("w1", 1)
    assert "w2 record 1 names record 6" in problems[0].reason
    # with its head left behind, the head also says so
    problems = verify(w2_only, heads, TRUSTED)
    assert first(problems) == ("w1", 1) and "every record" in problems[0].reason


def test_rolling_back_an_earlier_writer_with_a_valid_signed_head_is_caught_by_the_reference() -> None:
    records, heads = two_writers()
    w1 = [r for r in records if r.writer == "w1"][:4]
    rolled_back = signed_head(w1[-1])  # an older genuine head, as an old backup would hold
    rest = [r for r in records if r.writer == "w2"]
    problems = verify(w1 + rest, [rolled_back, heads[1]], TRUSTED)
    assert problems == [Problem("w1", 5, "writer w2 record 1 names record 6 of this writer, which is missing or changed")]


def test_unsigned_head_of_an_earlier_writer_is_covered_by_the_later_writers_reference() -> None:
    records, heads = two_writers(w1_signed=False)  # w1 ended sealed: it could not sign
    assert verify(records, heads, TRUSTED) == []
    # Without the reference that covers it, it is just an unsigned head.
    w2 = [r for r in records if r.writer == "w2"]
    other = {"eventName": "AuditWriterStarted", "additionalEventData": {"previousWriters": []}}
    w2 = build("w2", [other] + [r.event for r in w2[1:]])
    w1 = [r for r in records if r.writer == "w1"]
    assert verify(w1 + w2, [heads[0], signed_head(w2[-1])], TRUSTED) == [Problem("w1", 6, "head is not signed")]


def test_a_reference_does_not_excuse_a_bad_signature() -> None:
    records, heads = two_writers()
    bad = dataclasses.replace(heads[0], signature=sign("w1", 6, heads[0].hash, OTHER_PRIVATE))
    assert verify(records, [bad, heads[1]], TRUSTED) == [Problem("w1", 6, "head signature does not verify")]


def test_references_from_broken_records_do_not_vouch_and_do_not_crash() -> None:
    records, heads = two_writers(w1_signed=False)
    w2_first = next(r for r in records if r.writer == "w2" and r.seq == 1)
    broken = dataclasses.replace(w2_first, hash="00" * 32)
    records = [broken if r is w2_first else r for r in records]
    problems = verify(records, heads, TRUSTED)
    assert first(problems) == ("w2", 1)
    assert Problem("w1", 6, "head is not signed") in problems  # no longer covered


@pytest.mark.parametrize("data", [None, "x", {"previousWriters": None}, {"previousWriters": "w1"}])
def test_odd_additional_event_data_is_not_a_reference(data: Any) -> None:
    records = build("w1", [{"eventName": "X", "additionalEventData": data}])
    assert verify(records, [signed_head(records[-1])], TRUSTED) == []


def test_malformed_reference_is_a_problem_not_a_crash() -> None:
    records = build("w1", [{"eventName": "AuditWriterStarted", "additionalEventData": {"previousWriters": [{"w": 1}]}}])
    problems = verify(records, [signed_head(records[-1])], TRUSTED)
    assert len(problems) == 1 and "w1 record 1 names" in problems[0].reason
