"""The staff PIN: its salted scrypt hash, and ``kiosk set-pin``, which writes that hash
into the ``[staff]`` table of the config file.

The config holds only ``pin_hash = "scrypt$15$8$1$<salt b64>$<hash b64>"`` (the format
of receipt-code hashes, :mod:`kiosk.session.receipt`); the PIN itself is never written,
logged or printed. A PIN is 4 to 12 ASCII digits: what the staff screen's keypad types.

scrypt makes each guess slow for someone who copied the config file; at the kiosk
itself guesses are limited by :mod:`kiosk.staff.lockout`, because a short PIN falls to
an offline search whatever the hash costs.
"""

from __future__ import annotations

import getpass
import hmac
import logging
import os
import re
import stat
import sys
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TextIO

from .. import logs, slowhash
from ..slowhash import slow_hash

log = logging.getLogger("kiosk.staff")

# Six digits at least: at five tries per five minutes, four digits fall to a patient
# visitor in days (10,000 PINs), six in years.
MIN_DIGITS: Final = 6
MAX_DIGITS: Final = 12
_PIN = re.compile(f"[0-9]{{{MIN_DIGITS},{MAX_DIGITS}}}")

#: What ``kiosk set-pin`` says about a PIN it refuses (never the PIN itself).
PIN_RULE: Final = f"a staff PIN is {MIN_DIGITS} to {MAX_DIGITS} digits (0-9), nothing else"


class PinError(ValueError):
    """Not a PIN: fewer than 6 or more than 12 characters, or not only digits 0-9."""


def check_pin(pin: str) -> str:
    """``pin`` itself when it is 6 to 12 ASCII digits; :class:`PinError` otherwise."""
    # fullmatch on [0-9], not str.isdigit(): that accepts Arabic-Indic and superscript
    # digits, which no keypad of the kiosk types and which would hash differently.
    if not isinstance(pin, str) or not _PIN.fullmatch(pin):
        raise PinError(PIN_RULE)
    return pin


def hash_pin(pin: str, *, salt: bytes | None = None) -> str:
    """``"scrypt$15$8$1$<salt b64>$<hash b64>"`` of a valid PIN (kiosk.slowhash)."""
    return slow_hash(check_pin(pin), salt=salt)


def is_pin_hash(stored: object) -> bool:
    """Whether ``stored`` is a PIN hash :func:`verify_pin` can check (not its correctness)."""
    return slowhash.parse(stored) is not None


def verify_pin(pin: str, stored: str) -> bool:
    """Whether ``pin`` is the PIN ``stored`` was made from; False on any malformed input.

    The comparison is constant-time; a malformed ``pin`` costs no scrypt, which tells a
    timing observer only that it was not 6 to 12 digits, which the keypad knows anyway.
    """
    try:
        check_pin(pin)
    except PinError:
        return False
    return slowhash.matches(pin, stored)


# -- writing the hash into the config file ------------------------------------------

class ConfigEditError(Exception):
    """The config file cannot be edited safely; nothing was written."""


_HEADER = re.compile(r"""^\s*\[\s*(?:staff|"staff"|'staff')\s*\]\s*(?:#.*)?$""")
_ANY_HEADER = re.compile(r"^\s*\[")
_PIN_LINE = re.compile(r"""^(\s*)(?:pin_hash|"pin_hash"|'pin_hash')\s*=""")


def _newline(lines: list[str]) -> str:
    return "\r\n" if lines and lines[0].endswith("\r\n") else "\n"


def edit_pin_hash(text: str, pin_hash: str) -> str:
    """``text`` (a TOML config) with ``[staff] pin_hash`` set to ``pin_hash``.

    Textual, so that comments, order and every other line stay as they are: the
    ``pin_hash`` line of the ``[staff]`` table is replaced; or the line is added right
    after an existing ``[staff]`` header; or a ``[staff]`` table is appended. The
    result is parsed again and must differ from ``text`` in ``staff.pin_hash`` alone,
    else :class:`ConfigEditError` (e.g. a ``staff.pin_hash = ...`` dotted key, or an
    inline ``staff = {...}`` table, which this edit does not understand).
    """
    if not is_pin_hash(pin_hash):
        raise ValueError("not a PIN hash")
    try:
        before = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigEditError(f"the file is not valid TOML: {exc}") from None
    lines = text.splitlines(keepends=True)
    nl = _newline(lines)
    new_line = f'pin_hash = "{pin_hash}"'
    header = next((i for i, line in enumerate(lines) if _HEADER.match(line)), None)
    if header is None:
        if lines and not lines[-1].endswith(("\n", "\r")):
            lines[-1] += nl
        if lines and lines[-1].strip():
            lines.append(nl)
        lines += [f"[staff]{nl}", f"{new_line}{nl}"]
    else:
        end = next((i for i in range(header + 1, len(lines))
                    if _ANY_HEADER.match(lines[i])), len(lines))
        existing = next((i for i in range(header + 1, end) if _PIN_LINE.match(lines[i])),
                        None)
        if existing is not None:
            indent = _PIN_LINE.match(lines[existing]).group(1)  # type: ignore[union-attr]
            ending = nl if lines[existing].endswith(("\n", "\r")) else ""
            lines[existing] = f"{indent}{new_line}{ending}"
        else:
            if not lines[header].endswith(("\n", "\r")):
                lines[header] += nl
            lines.insert(header + 1, f"{new_line}{nl}")
    result = "".join(lines)
    try:
        after = tomllib.loads(result)
    except tomllib.TOMLDecodeError:
        raise ConfigEditError("the [staff] table could not be edited as text (is pin_hash"
                              " given as a dotted key or an inline table?)") from None
    if not _same_but_pin(before, after, pin_hash):
        raise ConfigEditError("the [staff] table could not be edited as text (is pin_hash"
                              " given as a dotted key, an inline table or a multi-line"
                              " string?)")
    return result


def _same_but_pin(before: dict[str, Any], after: dict[str, Any], pin_hash: str) -> bool:
    staff = after.get("staff")
    if not isinstance(staff, dict) or staff.get("pin_hash") != pin_hash:
        return False

    def without_pin(doc: dict[str, Any]) -> dict[str, Any]:
        doc = dict(doc)
        table = doc.get("staff")
        if isinstance(table, dict):
            table = {k: v for k, v in table.items() if k != "pin_hash"}
            if table:
                doc["staff"] = table
            else:
                del doc["staff"]
        return doc

    return without_pin(before) == without_pin(after)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_pin_hash(config_path: Path, pin_hash: str) -> Path:
    """Set ``[staff] pin_hash`` in the file at ``config_path``, atomically; its real path.

    Temp file in the same folder, fsync, rename over the file, fsync the folder: a power
    cut leaves the old file or the new one, never half of one. The file keeps its mode
    (and its owner, where the process may set it). A symlink is followed: its target is
    what is replaced.
    """
    target = Path(config_path).resolve()
    try:
        raw = target.read_bytes()
        st = target.stat()
    except OSError as exc:
        raise ConfigEditError(f"cannot read {target}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigEditError(f"{target} is not UTF-8 text") from None
    data = edit_pin_hash(text, pin_hash).encode("utf-8")
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                    suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        try:
            os.fchmod(fd, stat.S_IMODE(st.st_mode))
            try:
                os.fchown(fd, st.st_uid, st.st_gid)
            except PermissionError:
                pass  # not root: the new file is ours, as the old one had to be to edit
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigEditError(f"cannot write {target}: {exc.strerror}") from None
    _fsync_dir(target.parent)
    return target


# -- the command ----------------------------------------------------------------------

def _read_twice(stdin: TextIO, prompt: Callable[[str], str] | None) -> tuple[str, str]:
    if prompt is not None:
        return prompt("New staff PIN (4 to 12 digits): "), prompt("The same PIN again: ")
    first, second = stdin.readline(), stdin.readline()
    if not second:
        raise EOFError
    return first.strip(), second.strip()


def set_pin_command(config_path: str | os.PathLike[str] | None, *,
                    stdin: TextIO | None = None, stderr: TextIO | None = None,
                    prompt: Callable[[str], str] | None = None) -> int:
    """``kiosk set-pin``: ask for the PIN twice, write its hash into the config file.

    ``config_path`` is ``--config``; None falls back to ``$KIOSK_CONFIG``. On a terminal
    the PIN is asked with getpass (not echoed); otherwise two lines are read from
    standard input. Exit 2, with the file untouched, for no config file, a bad PIN, two
    different PINs or a file that cannot be edited.

    The config is not validated first: a file whose ``pin_hash`` is wrong (a PIN typed
    in by hand, say) stops every other command, and this one is how to repair it.
    """
    stdin = sys.stdin if stdin is None else stdin
    stderr = sys.stderr if stderr is None else stderr

    def refuse(message: str) -> int:
        print(f"kiosk set-pin: {message}", file=stderr)
        return 2

    if config_path is None:
        from ..config import ENV_VAR

        config_path = os.environ.get(ENV_VAR) or None
    if config_path is None:
        return refuse("no config file: the built-in demo defaults cannot hold a PIN. Pass"
                      " --config PATH (or set KIOSK_CONFIG) to the kiosk's TOML file.")
    path = Path(config_path)
    if not path.is_file():
        return refuse(f"no config file at {path}; nothing was changed")
    if prompt is None and stdin.isatty():
        prompt = getpass.getpass
    try:
        first, second = _read_twice(stdin, prompt)
    except (EOFError, KeyboardInterrupt):
        return refuse("the PIN must be given twice; nothing was changed")
    try:
        check_pin(first)
    except PinError:
        return refuse(f"{PIN_RULE}; nothing was changed")
    if not hmac.compare_digest(first.encode(), second.encode()):
        return refuse("the two PINs differ; nothing was changed")
    try:
        written = write_pin_hash(path, hash_pin(first))
    except ConfigEditError as exc:
        return refuse(f"{exc}; nothing was changed")
    print(f"kiosk set-pin: the staff PIN's hash is now in [staff] of {written}")
    _log_pin_set(written, stderr)
    return 0


def _log_pin_set(config_path: Path, stderr: TextIO) -> None:
    """Note the change in the kiosk's log, when the config (now) loads; never the PIN."""
    from .. import config as config_mod

    try:
        cfg = config_mod.load(config_path)
    except config_mod.ConfigError as exc:
        print(f"kiosk set-pin: note: the config has another problem: {exc}",
              file=stderr)
        return
    try:
        logs.setup(cfg.data_dir)
    except OSError:
        return
    logs.event(log, "staff_pin_set")
