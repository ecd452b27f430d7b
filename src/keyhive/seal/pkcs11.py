"""The PKCS#11 seal: the root key wrapped by an AES key that never leaves an HSM.

Errors (all are :class:`~keyhive.seal.base.SealError`; none carries the PIN)::

    SealError                  a wrapped root key this HSM key does not open (also malformed)
     └─ HsmError               anything else the HSM seal reports (no PIN given, no AES-GCM ...)
         ├─ HsmModuleError     python-pkcs11 or the PKCS#11 module is missing or does not load
         ├─ HsmTokenNotFound   no single token carries the label
         ├─ HsmPinIncorrect    the token refused the PIN (wrong, locked, expired, never set)
         ├─ HsmKeyNotFound     no single usable AES-256 key carries the label
         └─ HsmUnavailable     the module or token failed during an operation (device gone ...)

Sessions are opened per operation, and every operation on one module runs under
one lock for that module: PKCS#11 login state is shared by all sessions of a
process, and python-pkcs11 initializes modules without OS locking.  After a token
or device failure the module is finalized and initialized again on the next call
(once, then the call is retried), so a seal heals when the HSM comes back.  Use
a seal in the process that made it (PKCS#11 modules do not survive fork).
"""

from __future__ import annotations

import hmac
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from keyhive import crypto
from keyhive.seal.base import SealError
from keyhive.seal.shamir import ROOT_PATH

try:
    import pkcs11
    from pkcs11 import exceptions as p11
except ImportError:  # the optional extra keyhive[hsm] is not installed
    pkcs11 = None  # type: ignore[assignment]

PIN_ENV = "KEYHIVE_PKCS11_PIN"
FORMAT_V1 = 1  # AES-256-GCM by the token key; see Pkcs11Seal
_ROOT_KEY_BYTES = crypto.KEY_BYTES
_WRAPPED_V1_BYTES = 1 + crypto.NONCE_BYTES + _ROOT_KEY_BYTES + crypto.TAG_BYTES  # 61
_MAX_PIN_FILE_BYTES = 4096  # a PIN file is a line, not a document

T = TypeVar("T")


class HsmError(SealError):
    """The PKCS#11 seal failed; the message names what to fix, never the PIN."""


class HsmModuleError(HsmError):
    """python-pkcs11 or the PKCS#11 module (the .so) is missing or will not load."""


class HsmTokenNotFound(HsmError):
    """No single token in the module carries the configured label."""


class HsmPinIncorrect(HsmError):
    """The token refused the PIN: wrong, locked, expired or never initialized."""


class HsmKeyNotFound(HsmError):
    """The token holds no single usable (AES-256, sensitive, non-extractable) key with the label."""


class HsmUnavailable(HsmError):
    """The module or token failed during an operation: the HSM went away or misbehaved."""


class Pkcs11Seal:
    """Wraps the root key with an AES-256 key inside a PKCS#11 token (CKM_AES_GCM).

    The token key is created by :meth:`ensure_key` with CKA_SENSITIVE true and
    CKA_EXTRACTABLE false, so it can be used but never read; a key with the label
    that could leave the token is refused.  The wrapped root key (version 1)::

        offset  length  field
        0       1       format version: 0x01
        1       12      GCM IV, random for each wrap
        13      32      the root key, encrypted inside the token
        45      16      GCM tag (128 bits)
                61      in all; any other length or version is refused

    The GCM associated data is the version byte followed by the storage path
    ``core/root``, so a blob moved elsewhere, or given another version byte, does not open.
    Each wrap is decrypted again before it is returned, which catches a token
    that silently substitutes its own IV (some FIPS-mode HSMs do).
    """

    kind = "pkcs11"

    def __init__(self, module_path: str, token_label: str, key_label: str, pin: str) -> None:
        if pkcs11 is None:
            raise HsmModuleError("python-pkcs11 is not installed: pip install 'keyhive[hsm]'")
        for name, value in (("module path", module_path), ("token label", token_label), ("key label", key_label)):
            if not value:
                raise HsmError(f"the PKCS#11 {name} is empty")
        if not pin:
            raise HsmPinIncorrect("no PKCS#11 PIN was given")
        self.module_path = module_path
        self.token_label = token_label
        self.key_label = key_label
        self._pin = pin

    def __repr__(self) -> str:
        return f"Pkcs11Seal(module={self.module_path!r}, token={self.token_label!r}, key={self.key_label!r})"

    def __reduce__(self) -> Any:
        raise TypeError("a Pkcs11Seal holds a PIN and is not pickled; build it again where it is needed")

    # -- the Seal interface -------------------------------------------------------
    def wrap_root(self, root_key: bytes) -> bytes:
        """The root key encrypted inside the token, in the version 1 layout above."""
        if len(root_key) != _ROOT_KEY_BYTES:
            raise ValueError(f"the root key must be {_ROOT_KEY_BYTES} bytes")

        def wrap(session: Any) -> bytes:
            key = self._find_key(session)
            iv = crypto.random_bytes(crypto.NONCE_BYTES)
            sealed = _gcm(key, "encrypt", iv, root_key)
            if len(sealed) != _ROOT_KEY_BYTES + crypto.TAG_BYTES or not hmac.compare_digest(
                _gcm(key, "decrypt", iv, sealed), root_key
            ):
                raise HsmUnavailable("the HSM did not decrypt what it had just encrypted")
            return bytes([FORMAT_V1]) + iv + sealed

        return self._run("wrap the root key", wrap)

    def unwrap_root(self, wrapped: bytes) -> bytes:
        """The root key from :meth:`wrap_root`'s output; SealError if this HSM key does not open it."""
        refused = SealError("the HSM key does not unwrap this root key")
        if len(wrapped) != _WRAPPED_V1_BYTES or wrapped[0] != FORMAT_V1:
            raise refused
        iv, sealed = wrapped[1 : 1 + crypto.NONCE_BYTES], wrapped[1 + crypto.NONCE_BYTES :]

        def unwrap(session: Any) -> bytes:
            key = self._find_key(session)
            try:
                root_key = _gcm(key, "decrypt", iv, sealed)
            except p11.PKCS11Error:
                if _round_trip_works(key):  # the HSM is fine, so the blob is at fault
                    raise refused from None
                raise
            if len(root_key) != _ROOT_KEY_BYTES:
                raise refused
            return root_key

        return self._run("unwrap the root key", unwrap)

    # -- operator actions -----------------------------------------------------------
    def ensure_key(self) -> bool:
        """Create the token key when the token has none with the label; True if it was created."""

        def ensure(session: Any) -> bool:
            _require_gcm(session.token)
            if self._find_key(session, missing_ok=True) is not None:
                return False
            session.generate_key(
                pkcs11.KeyType.AES,
                _ROOT_KEY_BYTES * 8,
                label=self.key_label,
                store=True,
                capabilities=pkcs11.MechanismFlag.ENCRYPT | pkcs11.MechanismFlag.DECRYPT,
                template={
                    pkcs11.Attribute.PRIVATE: True,
                    pkcs11.Attribute.SENSITIVE: True,
                    pkcs11.Attribute.EXTRACTABLE: False,
                    pkcs11.Attribute.MODIFIABLE: False,
                },
            )
            self._find_key(session)  # what was stored is what we asked for
            return True

        return self._run("create the token key", ensure, rw=True)

    def check(self) -> None:
        """Raise an HsmError unless the module, token, PIN and key still encrypt and decrypt."""

        def probe(session: Any) -> None:
            _require_gcm(session.token)
            if not _round_trip_works(self._find_key(session)):
                raise HsmUnavailable("the HSM key no longer encrypts and decrypts")

        self._run("check the key", probe)

    # -- sessions ---------------------------------------------------------------------
    def _run(self, action: str, operation: Callable[[Any], T], *, rw: bool = False) -> T:
        """``operation(session)`` in a fresh logged-in session, retried once on a reloaded module."""
        module = _module(self.module_path)
        with module.lock:
            first: HsmError | None = None
            while True:
                fresh = True
                try:
                    fresh = module.load()
                    return self._in_session(action, module.lib, operation, rw)
                except (HsmTokenNotFound, HsmUnavailable) as error:
                    module.stale = True  # a token may have come back, or been added, since the load
                    if not fresh:
                        first = error
                        continue
                    if isinstance(first, HsmUnavailable):  # the HSM went away while in use
                        raise HsmUnavailable(f"{first}; after reloading the module: {error}") from None
                    raise

    def _in_session(self, action: str, lib: Any, operation: Callable[[Any], T], rw: bool) -> T:
        try:
            token = lib.get_token(token_label=self.token_label)
        except (p11.NoSuchToken, p11.MultipleTokensReturned):
            raise HsmTokenNotFound(
                f"no single token labelled {self.token_label!r} in the PKCS#11 module {self.module_path}"
            ) from None
        except p11.PKCS11Error as error:
            raise _unavailable(action, error) from None
        try:
            session = token.open(rw=rw, user_pin=self._pin)
        except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange):
            raise HsmPinIncorrect(f"the token {self.token_label!r} refused the PIN") from None
        except p11.PinLocked:
            raise HsmPinIncorrect(f"the PIN of token {self.token_label!r} is locked") from None
        except p11.PinExpired:
            raise HsmPinIncorrect(f"the PIN of token {self.token_label!r} has expired") from None
        except p11.UserPinNotInitialized:
            raise HsmPinIncorrect(f"the user PIN of token {self.token_label!r} was never set") from None
        except p11.PKCS11Error as error:
            raise _unavailable(action, error) from None
        try:
            with session:
                return operation(session)
        except p11.PKCS11Error as error:
            raise _unavailable(action, error) from None

    def _find_key(self, session: Any, *, missing_ok: bool = False) -> Any:
        """The one usable AES-256 secret key with the label; HsmKeyNotFound otherwise.

        With ``missing_ok``, None when the token has no secret key with the label at all.
        """
        A = pkcs11.Attribute
        try:
            key = session.get_key(object_class=pkcs11.ObjectClass.SECRET_KEY, label=self.key_label)
        except p11.NoSuchKey:
            if missing_ok:
                return None
            raise HsmKeyNotFound(f"no key labelled {self.key_label!r} on token {self.token_label!r}") from None
        except p11.MultipleObjectsReturned:
            raise HsmKeyNotFound(
                f"more than one key labelled {self.key_label!r} on token {self.token_label!r}"
            ) from None
        attrs = key.get_attributes([A.KEY_TYPE, A.VALUE_LEN, A.SENSITIVE, A.EXTRACTABLE])
        if attrs[A.KEY_TYPE] != pkcs11.KeyType.AES or attrs[A.VALUE_LEN] != _ROOT_KEY_BYTES:
            raise HsmKeyNotFound(f"the key labelled {self.key_label!r} is not an AES-256 key")
        if not attrs[A.SENSITIVE] or attrs[A.EXTRACTABLE]:
            raise HsmKeyNotFound(f"the key labelled {self.key_label!r} can be read out of the token: refused")
        return key


def read_pin(env: str = PIN_ENV, file: str | None = None) -> str:
    """The PKCS#11 PIN from ``file`` when given (one line), else from the environment variable ``env``."""
    if file is not None:
        try:
            with open(file, "rb") as f:
                raw = f.read(_MAX_PIN_FILE_BYTES + 1)
        except OSError as error:
            raise HsmError(f"cannot read the PIN file {file}: {error.strerror}") from None
        if len(raw) > _MAX_PIN_FILE_BYTES:
            raise HsmError(f"the PIN file {file} is larger than {_MAX_PIN_FILE_BYTES} bytes")
        try:
            pin = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise HsmError(f"the PIN file {file} is not UTF-8") from None
        if not pin:
            raise HsmError(f"the PIN file {file} is empty")
        return pin
    pin = os.environ.get(env, "")
    if not pin:
        raise HsmError(f"no PKCS#11 PIN: set {env} or give a PIN file")
    return pin


# -- module registry: one library object and one lock per module file ----------------
@dataclass
class _Module:
    path: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    lib: Any = None
    stale: bool = False

    def load(self) -> bool:
        """Load the library, or initialize it again when stale; True if it is fresh from that."""
        if self.lib is None:
            if os.sep in self.path and not os.path.isfile(self.path):
                raise HsmModuleError(f"no PKCS#11 module at {self.path}")
            try:
                self.lib = pkcs11.lib(self.path)
            except (p11.PKCS11Error, OSError) as error:  # the message is the loader's: a path, no secret
                raise HsmModuleError(
                    f"cannot load the PKCS#11 module {self.path}: {error or type(error).__name__}"
                ) from None
            self.stale = False
            return True
        if self.stale:
            try:
                self.lib.finalize()
            except p11.PKCS11Error:
                pass  # a module that lost its device may not finalize cleanly; initialize anyway
            try:
                self.lib.initialize()
            except p11.PKCS11Error as error:
                raise _unavailable("initialize the PKCS#11 module", error) from None
            self.stale = False
            return True
        return False


_MODULES: dict[str, _Module] = {}
_MODULES_LOCK = threading.Lock()


def _module(path: str) -> _Module:
    # One entry per file: two paths to one .so share its single C_Initialize state.
    key = os.path.realpath(path) if os.path.exists(path) else path
    with _MODULES_LOCK:
        return _MODULES.setdefault(key, _Module(key))


# -- small helpers ------------------------------------------------------------------
def _gcm(key: Any, direction: str, iv: bytes, data: bytes) -> bytes:
    params = pkcs11.GCMParams(iv, bytes([FORMAT_V1]) + ROOT_PATH.encode(), crypto.TAG_BYTES * 8)
    operation = key.encrypt if direction == "encrypt" else key.decrypt
    return bytes(operation(data, mechanism=pkcs11.Mechanism.AES_GCM, mechanism_param=params))


def _round_trip_works(key: Any) -> bool:
    probe = bytes(_ROOT_KEY_BYTES)
    iv = crypto.random_bytes(crypto.NONCE_BYTES)
    try:
        return _gcm(key, "decrypt", iv, _gcm(key, "encrypt", iv, probe)) == probe
    except p11.PKCS11Error:
        return False


def _require_gcm(token: Any) -> None:
    if pkcs11.Mechanism.AES_GCM not in token.slot.get_mechanisms():
        raise HsmError(f"the token {token.label!r} does not offer CKM_AES_GCM, which the PKCS#11 seal needs")


def _unavailable(action: str, error: Exception) -> HsmUnavailable:
    # The PKCS#11 error's class names the return code (GeneralError, DeviceRemoved ...); its
    # text is not used, so nothing the caller passed in can leak through it.
    return HsmUnavailable(f"the HSM failed to {action}: {type(error).__name__}")


__all__ = [
    "HsmError",
    "HsmKeyNotFound",
    "HsmModuleError",
    "HsmPinIncorrect",
    "HsmTokenNotFound",
    "HsmUnavailable",
    "Pkcs11Seal",
    "read_pin",
]
