"""The PKCS#11 seal against a real SoftHSM2 token, through python-pkcs11: no mocks.

Each test gets a fresh token in its tmp dir (tests/softhsm.py).  The seal
conformance checks at the top hold for any Seal; the rest are the HSM's own
promises: the key persists, cannot be read out, and every failure is a clear
SealError that never carries the PIN.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest

from keyhive import crypto
from keyhive.seal import SealError
from keyhive.seal.conformance import exercise_seal
from keyhive.seal.pkcs11 import (
    FORMAT_V1,
    HsmError,
    HsmKeyNotFound,
    HsmModuleError,
    HsmPinIncorrect,
    HsmTokenNotFound,
    HsmUnavailable,
    Pkcs11Seal,
    read_pin,
)
from tests.softhsm import SoftHsmToken, new_token

KEY_LABEL = "keyhive-root"


# -- the seal conformance checks (any Seal) -----------------------------------------
# -- fixtures ---------------------------------------------------------------------------
@pytest.fixture
def token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftHsmToken:
    return new_token(tmp_path, monkeypatch)


@pytest.fixture
def seal(token: SoftHsmToken) -> Pkcs11Seal:
    made = seal_on(token)
    assert made.ensure_key() is True
    return made


def seal_on(token: SoftHsmToken, *, pin: str | None = None, key_label: str = KEY_LABEL) -> Pkcs11Seal:
    return Pkcs11Seal(token.module_path, token.label, key_label, token.pin if pin is None else pin)


def p11_session(token: SoftHsmToken) -> Any:
    """A read-write python-pkcs11 session of the test's own, beside the seal's."""
    import pkcs11

    return pkcs11.lib(token.module_path).get_token(token_label=token.label).open(rw=True, user_pin=token.pin)


def the_key(session: Any) -> Any:
    import pkcs11

    return session.get_key(object_class=pkcs11.ObjectClass.SECRET_KEY, label=KEY_LABEL)


def never_shows(secret: str, error: BaseException) -> None:
    """Neither the error nor anything chained to it shows ``secret``."""
    seen: BaseException | None = error
    while seen is not None:
        assert secret not in str(seen) and secret not in repr(seen), seen
        seen = seen.__cause__ or seen.__context__


# -- conformance and format ------------------------------------------------------------
def test_conformance(seal: Pkcs11Seal) -> None:
    assert seal.kind == "pkcs11"
    exercise_seal(seal)


def test_the_documented_layout_opens_and_binds_its_path(seal: Pkcs11Seal, token: SoftHsmToken) -> None:
    """A blob built by hand from the class docstring unwraps; one bound to another path does not."""
    import pkcs11

    root_key = crypto.new_key()

    def by_hand(version: int, aad: bytes) -> bytes:
        iv = os.urandom(crypto.NONCE_BYTES)
        with p11_session(token) as session:
            sealed = the_key(session).encrypt(
                root_key, mechanism=pkcs11.Mechanism.AES_GCM, mechanism_param=pkcs11.GCMParams(iv, aad, 128)
            )
        return bytes([version]) + iv + bytes(sealed)

    blob = by_hand(FORMAT_V1, b"\x01core/root")
    assert len(blob) == 61
    assert seal.unwrap_root(blob) == root_key
    for other in (b"\x01core/other", b"core/root", b""):  # _MoveIntegrity: another place, another header
        with pytest.raises(SealError):
            seal.unwrap_root(by_hand(FORMAT_V1, other))
    with pytest.raises(SealError):
        seal.unwrap_root(by_hand(2, b"\x02core/root"))  # an unknown version is refused before the HSM
    assert len(seal.wrap_root(root_key)) == 61 and seal.wrap_root(root_key)[0] == FORMAT_V1


def test_only_a_root_key_sized_value_is_wrapped(seal: Pkcs11Seal) -> None:
    for bad in (b"", bytes(16), bytes(33)):
        with pytest.raises(ValueError):
            seal.wrap_root(bad)


# -- the key lives in the token and stays there ------------------------------------------
def test_two_seals_on_one_key_open_each_others_wraps(seal: Pkcs11Seal, token: SoftHsmToken) -> None:
    other = seal_on(token)
    assert other.ensure_key() is False
    root_key = crypto.new_key()
    assert other.unwrap_root(seal.wrap_root(root_key)) == root_key
    assert seal.unwrap_root(other.wrap_root(root_key)) == root_key


CHILD = textwrap.dedent(
    """
    import sys
    from keyhive.seal.pkcs11 import Pkcs11Seal, read_pin
    module, token, key, action, data = sys.argv[1:]
    seal = Pkcs11Seal(module, token, key, read_pin())
    if action == "create-and-wrap":
        assert seal.ensure_key() is True
        print(seal.wrap_root(bytes.fromhex(data)).hex())
    else:
        print(seal.unwrap_root(bytes.fromhex(data)).hex())
    """
)


def child(token: SoftHsmToken, action: str, data: bytes) -> bytes:
    """Run the seal in a new process that reads its PIN from KEYHIVE_PKCS11_PIN."""
    env = {**token.env, "KEYHIVE_PKCS11_PIN": token.pin}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, token.module_path, token.label, KEY_LABEL, action, data.hex()],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert token.pin not in done.stdout + done.stderr
    return bytes.fromhex(done.stdout.strip())


def test_the_key_persists_across_processes(token: SoftHsmToken) -> None:
    root_key = crypto.new_key()
    wrapped = child(token, "create-and-wrap", root_key)  # another process makes the key
    here = seal_on(token)
    assert here.unwrap_root(wrapped) == root_key
    assert here.ensure_key() is False
    assert child(token, "unwrap", here.wrap_root(root_key)) == root_key  # and a third one opens ours


def test_ensure_key_is_idempotent(token: SoftHsmToken) -> None:
    import pkcs11

    seal = seal_on(token)
    assert seal.ensure_key() is True
    assert [seal.ensure_key() for _ in range(3)] == [False, False, False]
    with p11_session(token) as session:
        assert len(list(session.get_objects({pkcs11.Attribute.LABEL: KEY_LABEL}))) == 1


def test_the_key_cannot_leave_the_token(seal: Pkcs11Seal, token: SoftHsmToken) -> None:
    import pkcs11
    from pkcs11 import Attribute as A

    with p11_session(token) as session:
        key = the_key(session)
        assert key[A.EXTRACTABLE] is False and key[A.SENSITIVE] is True
        assert key[A.NEVER_EXTRACTABLE] is True and key[A.ALWAYS_SENSITIVE] is True
        assert key[A.TOKEN] is True and key[A.PRIVATE] is True
        assert key[A.KEY_TYPE] == pkcs11.KeyType.AES and key[A.VALUE_LEN] == 32
        assert key[A.SIGN] is False and key[A.WRAP] is False and key[A.DERIVE] is False
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            key[A.VALUE]
        with pytest.raises(pkcs11.exceptions.PKCS11Error):
            key[A.EXTRACTABLE] = True


def test_a_key_that_could_leave_the_token_is_refused(token: SoftHsmToken) -> None:
    import pkcs11

    with p11_session(token) as session:
        session.generate_key(
            pkcs11.KeyType.AES, 256, label=KEY_LABEL, store=True,
            template={pkcs11.Attribute.SENSITIVE: False, pkcs11.Attribute.EXTRACTABLE: True},
        )
    seal = seal_on(token)
    with pytest.raises(HsmKeyNotFound, match="read out"):
        seal.ensure_key()  # and it does not add a second key beside it
    with pytest.raises(HsmKeyNotFound, match="read out"):
        seal.wrap_root(crypto.new_key())


# -- clear failures --------------------------------------------------------------------------
def test_wrong_pin(seal: Pkcs11Seal, token: SoftHsmToken) -> None:
    wrapped = seal.wrap_root(crypto.new_key())
    wrong = seal_on(token, pin="wrong-" + token.pin)
    for call in (wrong.check, wrong.ensure_key, lambda: wrong.unwrap_root(wrapped)):
        with pytest.raises(HsmPinIncorrect, match="refused the PIN") as info:
            call()
        never_shows(token.pin, info.value)
        never_shows("wrong-", info.value)
    seal.check()  # one wrong attempt did not break the right PIN


def test_missing_or_unloadable_module(token: SoftHsmToken, tmp_path: Path) -> None:
    junk = tmp_path / "libjunk.so"
    junk.write_bytes(b"this is not a shared object")
    for path, message in ((str(tmp_path / "nothing.so"), "no PKCS#11 module"), (str(junk), "cannot load")):
        seal = Pkcs11Seal(path, token.label, KEY_LABEL, token.pin)
        for call in (seal.check, seal.ensure_key, lambda: seal.unwrap_root(b"\x01" * 61)):
            with pytest.raises(HsmModuleError, match=message) as info:
                call()
            never_shows(token.pin, info.value)


def test_a_shared_object_that_is_no_pkcs11_module(token: SoftHsmToken) -> None:
    import ctypes.util

    libm = ctypes.util.find_library("m")
    assert libm is not None
    with pytest.raises(HsmModuleError, match="cannot load"):
        Pkcs11Seal(libm, token.label, KEY_LABEL, token.pin).check()


def test_two_paths_to_one_module_share_it(seal: Pkcs11Seal, token: SoftHsmToken, tmp_path: Path) -> None:
    """A module file is initialized once per process, whatever path names it."""
    link = tmp_path / "libsofthsm2-link.so"
    link.symlink_to(token.module_path)
    other = Pkcs11Seal(str(link), token.label, KEY_LABEL, token.pin)
    root_key = crypto.new_key()
    assert other.unwrap_root(seal.wrap_root(root_key)) == root_key
    seal.check()


def test_missing_token(seal: Pkcs11Seal, token: SoftHsmToken) -> None:
    other = Pkcs11Seal(token.module_path, "no-such-token", KEY_LABEL, token.pin)
    with pytest.raises(HsmTokenNotFound, match="no-such-token") as info:
        other.check()
    never_shows(token.pin, info.value)
    seal.check()  # the reload after the miss did not hurt the token that exists


def test_deleted_key(seal: Pkcs11Seal, token: SoftHsmToken) -> None:
    root_key = crypto.new_key()
    wrapped = seal.wrap_root(root_key)
    seal.check()
    with p11_session(token) as session:
        the_key(session).destroy()
    with pytest.raises(HsmKeyNotFound, match=KEY_LABEL) as info:
        seal.unwrap_root(wrapped)
    never_shows(token.pin, info.value)
    with pytest.raises(HsmKeyNotFound):
        seal.check()
    with pytest.raises(HsmKeyNotFound):
        seal.wrap_root(root_key)
    assert seal.ensure_key() is True  # a new key is made, but what the old one wrapped is gone
    with pytest.raises(SealError):
        seal.unwrap_root(wrapped)


def test_the_hsm_going_away_and_coming_back(seal: Pkcs11Seal, token: SoftHsmToken) -> None:
    root_key = crypto.new_key()
    wrapped = seal.wrap_root(root_key)
    away = token.tokendir.with_name("tokens-away")
    shutil.move(token.tokendir, away)
    try:
        for call in (seal.check, lambda: seal.unwrap_root(wrapped), lambda: seal.wrap_root(root_key)):
            with pytest.raises(HsmUnavailable) as info:
                call()
            never_shows(token.pin, info.value)
    finally:
        shutil.move(away, token.tokendir)
    seal.check()  # the module is initialized again on the next call: the seal heals
    assert seal.unwrap_root(wrapped) == root_key


def test_errors_are_seal_errors_and_never_show_the_pin(seal: Pkcs11Seal, token: SoftHsmToken) -> None:
    for cls in (HsmModuleError, HsmTokenNotFound, HsmPinIncorrect, HsmKeyNotFound, HsmUnavailable):
        assert issubclass(cls, HsmError) and issubclass(cls, SealError)
    assert token.pin not in repr(seal) and token.pin not in str(seal)
    assert repr(seal) == f"Pkcs11Seal(module={token.module_path!r}, token={token.label!r}, key={KEY_LABEL!r})"
    with pytest.raises(TypeError):
        pickle.dumps(seal)
    with pytest.raises(SealError) as info:
        seal.unwrap_root(bytes(61))
    never_shows(token.pin, info.value)
    with pytest.raises(HsmPinIncorrect):
        Pkcs11Seal(token.module_path, token.label, KEY_LABEL, "")


# -- threads ----------------------------------------------------------------------------------
def test_works_from_worker_threads(seal: Pkcs11Seal, token: SoftHsmToken) -> None:
    seals = [seal, seal_on(token)]
    keys = [crypto.new_key() for _ in range(24)]

    def round_trip(i: int) -> bytes:
        mine = seals[i % 2]
        if i % 5 == 0:
            mine.check()
        return mine.unwrap_root(seals[(i + 1) % 2].wrap_root(keys[i]))

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(round_trip, range(len(keys)))) == keys


# -- the PIN --------------------------------------------------------------------------------
@pytest.fixture
def no_pin_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("KEYHIVE_PKCS11_PIN", raising=False)
    yield


def test_read_pin_from_env(no_pin_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(HsmError, match="KEYHIVE_PKCS11_PIN"):
        read_pin()
    monkeypatch.setenv("KEYHIVE_PKCS11_PIN", "1234 5678")
    assert read_pin() == "1234 5678"
    monkeypatch.setenv("OTHER_PIN", "42")
    assert read_pin(env="OTHER_PIN") == "42"


def test_read_pin_from_file(no_pin_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_bytes(b"s3cret pin\r\n")
    monkeypatch.setenv("KEYHIVE_PKCS11_PIN", "from-env")
    assert read_pin(file=str(pin_file)) == "s3cret pin"  # a file given explicitly wins
    pin_file.write_bytes(b"\n")
    with pytest.raises(HsmError, match="empty"):
        read_pin(file=str(pin_file))
    pin_file.write_bytes(b"x" * 5000)
    with pytest.raises(HsmError, match="larger") as info:
        read_pin(file=str(pin_file))
    assert "xxxx" not in str(info.value)
    with pytest.raises(HsmError, match="cannot read") as info:
        read_pin(file=str(tmp_path / "absent"))
