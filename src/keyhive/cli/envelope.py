"""``keyhive encrypt`` / ``keyhive decrypt``: envelope encryption of files, trees and pipes.

Messages are in the AWS Encryption SDK's format (keyhive.envelope), so
``aws-encryption-cli`` reads what these write and the other way round. KMS is the
server at ``--endpoint`` (default $KEYHIVE_ENDPOINT), reached with the AWS credentials
of the environment.

Output files are written to a temporary file beside them and renamed into place only
when the whole message has been processed and checked: a failed decryption leaves no
plaintext file behind, and a file that existed before is left as it was.
"""

from __future__ import annotations

import argparse
import gc
import io
import logging
import os
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from keyhive.cli.client import ClientError, default_endpoint

if TYPE_CHECKING:
    from keyhive.envelope import Envelope

# One input to one output: (source, sink, the source's size if known).
_Action = Callable[["_Meter", Any, "int | None"], None]

SUFFIX = ".khe"
PROGRESS_MIN_BYTES = 8 * 1024 * 1024  # smaller inputs finish before a bar would help
_PROGRESS_INTERVAL = 0.1  # seconds between redraws
_MIB = 1024 * 1024
_WRITE_BEHIND = 8 * _MIB  # bytes written between two starts of writeback (_WriteBehind)


def add_commands(commands: Any) -> None:
    encrypt = commands.add_parser("encrypt", help="encrypt a file, a tree or stdin under KMS keys (AWS Encryption SDK format)")
    encrypt.add_argument("--key", action="append", required=True, metavar="KEY",
                         help="KMS key id, ARN or alias to encrypt under; repeat for several (any one decrypts)")
    encrypt.add_argument("--unsigned", action="store_true",
                         help="write the unsigned key-committing suite (several times faster): only when everyone "
                              "who may decrypt is trusted as much as the writer, since any of them could forge a "
                              "message (default: the ECDSA-signed suite)")
    _common_flags(encrypt, "the encryption context to bind to the message (repeatable)")
    encrypt.set_defaults(run=_encrypt)

    decrypt = commands.add_parser("decrypt", help="decrypt what 'keyhive encrypt' or aws-encryption-cli wrote")
    decrypt.add_argument("--key", action="append", metavar="KEY",
                         help="a KMS key allowed to decrypt (repeatable; default: any key your credentials may use)")
    _common_flags(decrypt, "a pair the message's encryption context must hold (repeatable)")
    decrypt.set_defaults(run=_decrypt)


def _common_flags(parser: argparse.ArgumentParser, context_help: str) -> None:
    parser.add_argument("--context", action="append", default=[], metavar="K=V", help=context_help)
    parser.add_argument("-i", "--input", default="-", help="file or directory to read (default: stdin)")
    parser.add_argument("-o", "--output", default="-",
                        help=f"file or directory to write (default: stdout); encrypt adds {SUFFIX}, decrypt strips it")
    parser.add_argument("-r", "--recursive", action="store_true",
                        help="process every file under the input directory into the output directory")
    parser.add_argument("--endpoint", default=None, help="KMS endpoint URL (default $KEYHIVE_ENDPOINT)")


# -- commands ---------------------------------------------------------------------------------
def _encrypt(args: argparse.Namespace) -> int:
    envelope = _envelope(args, args.key, signed=not args.unsigned)
    context = _pairs(args.context)

    def one(src: _Meter, dst: Any, size: int | None) -> None:
        envelope.encrypt_stream(src, dst, context, size=size)

    _run(args, one, "encrypt")
    return 0


def _decrypt(args: argparse.Namespace) -> int:
    envelope = _envelope(args, [])
    expected = _pairs(args.context)
    allowed = args.key or None

    def one(src: _Meter, dst: Any, size: int | None) -> None:
        envelope.decrypt_stream(src, dst, expected_context=expected, allowed_key_ids=allowed)

    _run(args, one, "decrypt")
    return 0


def _envelope(args: argparse.Namespace, key_ids: list[str], *, signed: bool = True) -> Envelope:
    # This process ends when the command does. Freezing what exists now spares every later
    # garbage collection, and the one at exit, from walking the objects of all the imports
    # (about 50 ms per run; docs/envelope.md, "Performance").
    gc.freeze()
    try:
        from keyhive.envelope import Envelope, EnvelopeError
    except ModuleNotFoundError as exc:
        raise ClientError(str(exc)) from None
    from keyhive.server import DEFAULT_REGION

    # The SDK logs each failed KMS call and stream close as an error with a traceback;
    # the command reports one line instead.
    logging.getLogger("aws_encryption_sdk").addHandler(logging.NullHandler())
    region = None if _region_configured() else DEFAULT_REGION
    try:
        return Envelope(key_ids, endpoint_url=args.endpoint or default_endpoint(), region=region, signed=signed)
    except EnvelopeError as exc:
        raise ClientError(str(exc)) from None


def _region_configured() -> bool:
    """Whether the AWS configuration names a region (AWS_DEFAULT_REGION spares building a session to ask)."""
    if os.environ.get("AWS_DEFAULT_REGION"):
        return True
    import botocore.session

    return bool(botocore.session.Session().get_config_variable("region"))


def _pairs(items: list[str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ClientError(f"--context takes KEY=VALUE, not {item!r}")
        if key in pairs:
            raise ClientError(f"--context {key!r} given twice")
        pairs[key] = value
    return pairs


# -- where bytes come from and go to ------------------------------------------------------------
def _run(args: argparse.Namespace, one: _Action, action: str) -> None:
    if args.recursive:
        if args.input == "-" or args.output == "-":
            raise ClientError("--recursive needs an input directory (-i) and an output directory (-o)")
        _tree(Path(args.input), Path(args.output), one, action)
        return
    source = None if args.input == "-" else Path(args.input)
    if source is not None and source.is_dir():
        raise ClientError(f"{source} is a directory: use --recursive")
    if args.output == "-":
        _one(source, None, one, action)
        return
    target = Path(args.output)
    if target.is_dir():
        if source is None:
            raise ClientError(f"{target} is a directory: name an output file to write stdin to")
        target = target / _output_name(source.name, action)
    _one(source, target, one, action)


def _tree(root: Path, out: Path, one: _Action, action: str) -> None:
    if not root.is_dir():
        raise ClientError(f"{root} is not a directory")
    root_r, out_r = root.resolve(), out.resolve()
    if out_r == root_r or root_r in out_r.parents:
        raise ClientError("the output directory must not be inside the input directory")
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not stat.S_ISREG(path.lstat().st_mode):
                print(f"keyhive: skipped {path}: not a regular file", file=sys.stderr)
                continue
            if action == "decrypt" and not name.endswith(SUFFIX):
                print(f"keyhive: skipped {path}: no {SUFFIX} suffix", file=sys.stderr)
                continue
            target = out_r / path.relative_to(root).parent / _output_name(name, action)
            target.parent.mkdir(parents=True, exist_ok=True)
            _one(path, target, one, action)


def _output_name(name: str, action: str) -> str:
    if action == "encrypt":
        return name + SUFFIX
    if name.endswith(SUFFIX) and len(name) > len(SUFFIX):
        return name[: -len(SUFFIX)]
    return name + ".decrypted"


def _one(source: Path | None, target: Path | None, one: _Action, action: str) -> None:
    """Process one input into one output (None: stdin / stdout); errors name the input."""
    from keyhive.envelope import EnvelopeError

    label = str(source) if source else "stdin"
    stdout = _Counted(sys.stdout.buffer)
    try:
        with _opened(source) as src:
            size = _remaining(src)
            metered = _Meter(src, size, label, action)
            if target is None:
                try:
                    one(metered, stdout, size)
                finally:
                    sys.stdout.buffer.flush()
            else:
                with _atomic(target) as dst:
                    one(metered, dst, size)
            metered.finish()
    except OSError as exc:
        raise ClientError(f"{exc.filename or label}: {exc.strerror or exc}") from None
    except EnvelopeError as exc:
        note = ""
        if action == "decrypt" and stdout.written:
            note = " (discard the output: what reached stdout is incomplete)"
        raise ClientError(f"{label}: {exc}{note}") from None


@contextmanager
def _opened(source: Path | None) -> Iterator[BinaryIO]:
    if source is None:
        yield sys.stdin.buffer
        return
    with open(source, "rb") as f:
        yield f


def _remaining(src: BinaryIO) -> int | None:
    """Bytes left in ``src`` if it is a regular file, else None (a pipe, a terminal)."""
    try:
        info = os.fstat(src.fileno())
        return info.st_size - src.tell() if stat.S_ISREG(info.st_mode) else None
    except (OSError, ValueError, AttributeError):
        return None


@contextmanager
def _atomic(target: Path) -> Iterator[Any]:
    """A temporary file beside ``target`` (mode 0600), fsynced and renamed to it only if the block succeeds."""
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            yield _WriteBehind(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, target)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temp)
        raise


class _WriteBehind(io.RawIOBase):
    """A file writer that hands what it has written to the disk as it goes, not all at the fsync.

    Every ``_WRITE_BEHIND`` bytes, POSIX_FADV_DONTNEED on the range just written starts its
    writeback (Linux) and lets its pages leave the cache once clean: the disk then works
    while the next bytes are encrypted and hashed, and the final fsync has little left.
    """

    def __init__(self, dst: BinaryIO) -> None:
        super().__init__()
        self._dst = dst
        self._written = self._behind = 0
        self._advise = getattr(os, "posix_fadvise", None)

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._dst.write(data)
        self._written += len(data)
        if self._advise is not None and self._written - self._behind >= _WRITE_BEHIND:
            self._dst.flush()
            with suppress(OSError):  # advice only: a file system without it loses nothing
                self._advise(self._dst.fileno(), self._behind, self._written - self._behind,
                             os.POSIX_FADV_DONTNEED)
            self._behind = self._written
        return len(data)


class _Counted(io.RawIOBase):
    """A writer that remembers whether anything was written (an io object: it is handed views, which it copies)."""

    def __init__(self, dst: BinaryIO) -> None:
        super().__init__()
        self._dst = dst
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.written += len(data)
        self._dst.write(data)
        return len(data)


class _Meter:
    """A reader that draws a progress bar on stderr, for large inputs when stderr is a terminal."""

    def __init__(self, src: BinaryIO, total: int | None, label: str, action: str) -> None:
        self._src = src
        self._total = total
        self._label = f"{action} {label}"
        self._done = 0
        self._start = self._drawn = time.monotonic()
        self._on = total is not None and total >= PROGRESS_MIN_BYTES and sys.stderr.isatty()

    def read(self, n: int = -1) -> bytes:
        data = self._src.read(n)
        self._count(len(data))
        return data

    def readinto(self, buffer: Any) -> int | None:
        n = cast("io.BufferedIOBase", self._src).readinto(buffer)  # files and stdin are buffered readers
        if n:
            self._count(n)
        return n

    def fileno(self) -> int:
        """The file's descriptor: a regular file is then read ahead on another thread."""
        return self._src.fileno()

    def _count(self, n: int) -> None:
        self._done += n
        if self._on and time.monotonic() - self._drawn >= _PROGRESS_INTERVAL:
            self._draw()

    def finish(self) -> None:
        if self._on:
            self._draw()
            sys.stderr.write("\n")
            sys.stderr.flush()

    def _draw(self) -> None:
        now = time.monotonic()
        self._drawn = now
        total = self._total or 1
        fraction = min(self._done / total, 1.0)
        bar = "#" * int(fraction * 30)
        rate = self._done / max(now - self._start, 1e-6) / 1e6
        sys.stderr.write(f"\r{self._label} [{bar:<30}] {fraction:4.0%} "
                         f"{self._done / _MIB:.0f}/{total / _MIB:.0f} MiB {rate:.0f} MB/s")
        sys.stderr.flush()
