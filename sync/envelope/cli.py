"""``python -m sync.envelope``: age's verbs on our implementation.

::

    keygen  [-o FILE] [--pq]
    encrypt [-a] -r RECIPIENT... [-R RECIPIENTS_FILE]... [-o OUT] [IN]
    encrypt [-a] -p [-o OUT] [IN]
    decrypt [-i IDENTITY_FILE]... [-o OUT] [IN]

``-`` means standard input or output. Any failure prints one line on stderr
and exits non-zero; a partly written output file is deleted.

``-a``/``--armor`` writes ASCII armor; decrypt recognises armor by itself.
``-p``/``--passphrase`` seals to a passphrase (scrypt), taken from the
environment variable ``AGE_PASSPHRASE`` when it is set (for scripts and
tests), else asked on the terminal twice. ``decrypt`` without ``-i`` opens a
passphrase-encrypted file, asking for the passphrase only once it has seen
that the file is one; identity files given with ``-i`` may themselves be
passphrase-protected (``age -p`` form, binary or armored), as with age.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import stat
import sys
from collections.abc import Iterator
from typing import BinaryIO, NoReturn

from .errors import (
    ArmorError,
    EnvelopeError,
    HeaderError,
    HmacError,
    KeyFormatError,
    NoIdentityMatchError,
    PayloadError,
    TruncatedError,
)
from .keys import _mlkem, format_identity_file, parse_identity_file, parse_recipient
from .keys import parse_recipients_file as _parse_recipients_file
from .passphrase import MAX_IDENTITY_FILE_SIZE, is_age_file, open_with_passphrase
from .reader import decrypt_stream
from .scrypt import DEFAULT_LOG2_N, ScryptIdentity, ScryptRecipient
from .stanza import Identity, Recipient
from .writer import encrypt_stream
from .x25519 import X25519Identity

PROG = "python -m sync.envelope"
#: Scripts and tests give the passphrase here instead of on the terminal.
PASSPHRASE_ENV = "AGE_PASSPHRASE"


class _Failure(Exception):
    """A failure already phrased for the user."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"{PROG}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="age v1 files, implemented on cryptography")
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)

    keygen = verbs.add_parser("keygen", help="make an identity (prints its recipient on stderr)")
    keygen.add_argument("-o", "--output", metavar="FILE", help="write the identity to FILE")
    keygen.add_argument("--pq", action="store_true", help="a post-quantum hybrid identity")

    encrypt = verbs.add_parser("encrypt", help="encrypt to recipients or to a passphrase")
    encrypt.add_argument("-r", "--recipient", action="append", default=[], metavar="RECIPIENT")
    encrypt.add_argument(
        "-R", "--recipients-file", action="append", default=[], metavar="RECIPIENTS_FILE"
    )
    encrypt.add_argument(
        "-p", "--passphrase", action="store_true",
        help=f"encrypt to a passphrase (from ${PASSPHRASE_ENV}, else asked)",
    )
    encrypt.add_argument(
        "--scrypt-work-factor", type=int, default=DEFAULT_LOG2_N, metavar="LOG2N",
        help=f"log2 of scrypt's N for -p (default {DEFAULT_LOG2_N})",
    )
    encrypt.add_argument("-a", "--armor", action="store_true", help="write ASCII armor")
    encrypt.add_argument("-o", "--output", default="-", metavar="OUT")
    encrypt.add_argument("input", nargs="?", default="-", metavar="IN")

    decrypt = verbs.add_parser(
        "decrypt", help="decrypt with identities, or with a passphrase when no -i is given"
    )
    decrypt.add_argument("-i", "--identity", action="append", default=[], metavar="IDENTITY_FILE")
    decrypt.add_argument("-o", "--output", default="-", metavar="OUT")
    decrypt.add_argument("input", nargs="?", default="-", metavar="IN")
    return parser


def _read_text(name: str, what: str) -> str:
    try:
        if name == "-":
            return sys.stdin.read()
        with open(name, encoding="utf-8") as fh:
            return fh.read()
    except UnicodeDecodeError:
        raise _Failure(f"{what} {name} is not UTF-8 text") from None


def _read_bytes(name: str, limit: int) -> bytes:
    if name == "-":
        data = sys.stdin.buffer.read(limit + 1)
    else:
        with open(name, "rb") as fh:
            data = fh.read(limit + 1)
    if len(data) > limit:
        raise _Failure(f"{name} is too large for an identity file")
    return data


def _passphrase(*, confirm: bool) -> str:
    """The passphrase from $AGE_PASSPHRASE, else from the terminal (never echoed)."""
    given = os.environ.get(PASSPHRASE_ENV)
    if given is not None:
        if not given:
            raise _Failure(f"${PASSPHRASE_ENV} is empty")
        return given
    try:
        # getpass falls back to reading standard input when there is no
        # terminal, and standard input may be the file: never let it.
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
        first = getpass.getpass("Enter passphrase: ")
        if confirm and getpass.getpass("Confirm passphrase: ") != first:
            raise _Failure("the passphrases do not match")
    except (EOFError, OSError):
        raise _Failure(
            f"no passphrase: no terminal to ask on, and ${PASSPHRASE_ENV} is unset"
        ) from None
    if not first:
        raise _Failure("an empty passphrase protects nothing")
    return first


class _AskOnce:
    """One passphrase for the whole run, asked the first time it is needed."""

    def __init__(self) -> None:
        self._value: str | None = None

    def __call__(self) -> str:
        if self._value is None:
            self._value = _passphrase(confirm=False)
        return self._value


def _identities_from(name: str, ask: _AskOnce) -> list[Identity]:
    data = _read_bytes(name, MAX_IDENTITY_FILE_SIZE)
    if is_age_file(data):
        data = open_with_passphrase(data, ask)  # a protected identity file (age -p)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Failure(f"identity file {name} is not UTF-8 text") from None
    return parse_identity_file(text)


@contextlib.contextmanager
def _input(name: str) -> Iterator[BinaryIO]:
    if name == "-":
        yield sys.stdin.buffer
        return
    with open(name, "rb") as fh:
        yield fh


class _LazyFile:
    """An output file opened at the first write, as age does.

    A header failure then leaves an existing OUT untouched, and a failure
    later removes the partial output (which for decrypt is plaintext).

    A ``private`` file (decrypt's plaintext) is created mode 0600 whatever the
    umask. An existing OUT is overwritten, as age does, but only after it has
    been made 0600, so not one byte of plaintext is ever readable by others.
    (age itself keeps an existing file's mode and creates new ones 0666 less
    the umask; it is a tool for one user, this is for testimonies.)
    """

    def __init__(self, name: str, *, private: bool = False) -> None:
        self.name = name
        self._private = private
        self._fh: BinaryIO | None = None
        #: Whether OUT is a regular file (ours to delete on failure); /dev/null or a
        #: pipe is the user's and is never unlinked, above all when run as root.
        self._regular = False

    def _open(self) -> BinaryIO:
        if not self._private:
            fh = open(self.name, "wb")  # noqa: SIM115 - closed in finish/discard
            self._regular = stat.S_ISREG(os.fstat(fh.fileno()).st_mode)
            return fh
        # No O_TRUNC: an existing file is cut only once it is private.
        fd = os.open(self.name, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            info = os.fstat(fd)
            # Only a regular file is ours to restrict: -o /dev/null or a pipe is
            # the user's choice, and chmod on a device node would change it for all.
            if stat.S_ISREG(info.st_mode):
                self._regular = True
                if stat.S_IMODE(info.st_mode) != 0o600:
                    os.fchmod(fd, 0o600)
                os.ftruncate(fd, 0)
            return os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            raise

    def write(self, data: bytes | memoryview) -> int:
        if self._fh is None:
            self._fh = self._open()
        return self._fh.write(data)

    def finish(self) -> None:
        if self._fh is None:  # empty output still makes the file
            self.write(b"")
        assert self._fh is not None
        self._fh.close()

    def discard(self) -> None:
        if self._fh is not None:
            self._fh.close()
            if self._regular:
                with contextlib.suppress(OSError):
                    os.unlink(self.name)


@contextlib.contextmanager
def _output(name: str, *, binary_to_terminal_ok: bool, private: bool) -> Iterator[BinaryIO]:
    if name == "-":
        if not binary_to_terminal_ok and sys.stdout.isatty():
            raise _Failure("refusing to write binary age data to a terminal; use -o")
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    out = _LazyFile(name, private=private)
    try:
        yield out  # type: ignore[misc]
        out.finish()
    except BaseException:
        out.discard()
        raise


def _keygen(args: argparse.Namespace) -> None:
    identity: Identity = _mlkem().MlkemIdentity.generate() if args.pq else X25519Identity.generate()
    text = format_identity_file(identity)
    if args.output:
        try:
            fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise _Failure(f"{args.output} already exists; not overwriting a key file") from None
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    print(f"Public key: {identity.recipient()}", file=sys.stderr)


def _encrypt(args: argparse.Namespace) -> None:
    if args.input == "-" and "-" in args.recipients_file:
        raise _Failure("standard input cannot be both the input and a recipients file")
    recipients: list[Recipient] = [parse_recipient(r) for r in args.recipient]
    for name in args.recipients_file:
        recipients += _parse_recipients_file(_read_text(name, "recipients file"))
    if args.passphrase:
        if recipients:
            raise _Failure("-p cannot be combined with -r or -R: a passphrase file has one key")
        recipients = [
            ScryptRecipient(_passphrase(confirm=True), log2_n=args.scrypt_work_factor)
        ]
    if not recipients:
        raise _Failure("no recipients: use -r, -R or -p")
    with (
        _input(args.input) as src,
        _output(args.output, binary_to_terminal_ok=args.armor, private=False) as dst,
    ):
        encrypt_stream(src, dst, recipients, armor=args.armor)


def _decrypt(args: argparse.Namespace) -> None:
    if args.input == "-" and "-" in args.identity:
        raise _Failure("standard input cannot be both the input and an identity file")
    ask = _AskOnce()
    identities: list[Identity] = []
    for name in args.identity:
        identities += _identities_from(name, ask)
    if not identities:
        # No -i: the file must be passphrase-encrypted; the passphrase is asked
        # only once the header shows that it is.
        identities = [ScryptIdentity(ask)]
    with (
        _input(args.input) as src,
        _output(args.output, binary_to_terminal_ok=True, private=True) as dst,
    ):
        decrypt_stream(src, dst, identities=identities)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ArmorError):
        return f"bad armor: {exc}"
    if isinstance(exc, TruncatedError):
        return f"truncated file: {exc}"
    if isinstance(exc, PayloadError):
        return f"damaged payload: {exc}"
    if isinstance(exc, HmacError):
        return f"bad header: {exc}"
    if isinstance(exc, HeaderError):
        return f"bad header: {exc}"
    if isinstance(exc, NoIdentityMatchError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    return str(exc)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        {"keygen": _keygen, "encrypt": _encrypt, "decrypt": _decrypt}[args.verb](args)
    except (_Failure, EnvelopeError, KeyFormatError, OSError, ValueError) as exc:
        message = " ".join(_describe(exc).split())  # exactly one line
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1
    return 0
