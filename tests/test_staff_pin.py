"""The staff PIN: its hash, `kiosk set-pin`, and the lockout that survives a restart."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiosk import config as config_mod
from kiosk.staff import lockout
from kiosk.staff.lockout import LOCK_FILE, LOCKED, NO_PIN, OPEN, WRONG, PinGate
from kiosk.staff.pin import (
    ConfigEditError,
    PinError,
    check_pin,
    edit_pin_hash,
    hash_pin,
    is_pin_hash,
    verify_pin,
)

PIN = "482915"


@pytest.fixture(scope="module")
def pin_hash() -> str:
    return hash_pin(PIN)


# -- the hash -----------------------------------------------------------------------------

def test_hash_format_and_verify(pin_hash: str) -> None:
    scheme, log2_n, r, p, salt, digest = pin_hash.split("$")
    assert (scheme, log2_n, r, p) == ("scrypt", "15", "8", "1")
    assert len(salt) == 24 and len(digest) == 44  # 16 and 32 bytes, base64
    assert verify_pin(PIN, pin_hash)
    assert not verify_pin("482916", pin_hash)
    assert hash_pin(PIN) != pin_hash  # a fresh salt each time
    assert config_mod._pin_hash("staff.pin_hash", pin_hash) == pin_hash


@pytest.mark.parametrize("bad", ["123", "12345", "1234567890123", "12a4", "12 34", "", "١٢٣٤",
                                 "¹²³⁴", " 1234", "1234\n"])
def test_pin_rules(bad: str) -> None:
    with pytest.raises(PinError):
        check_pin(bad)
    with pytest.raises(PinError):
        hash_pin(bad)


@pytest.mark.parametrize("good", ["000000", "123456789012"])
def test_pin_lengths_accepted(good: str) -> None:
    assert check_pin(good) == good


def test_verify_is_false_on_anything_malformed(pin_hash: str) -> None:
    scheme, _, r, p, salt, digest = pin_hash.split("$")
    for stored in ["", "scrypt", "1234", pin_hash + "$x", pin_hash.replace("scrypt", "bcrypt"),
                   "$".join([scheme, "20", r, p, salt, digest]),  # a costlier scrypt: refused
                   "$".join([scheme, "10", r, p, salt, digest]),  # a weaker one: refused
                   "$".join([scheme, "15", r, p, salt[:-4], digest]),
                   "$".join([scheme, "15", r, p, salt, "!!!!" + digest[4:]])]:
        assert not verify_pin(PIN, stored), stored
        assert not is_pin_hash(stored)
    assert not verify_pin(PIN, None)  # type: ignore[arg-type]
    assert not verify_pin(1234, pin_hash)  # type: ignore[arg-type]
    assert not verify_pin("12a4", pin_hash)


# -- editing the config file ----------------------------------------------------------------

def test_edit_replaces_the_pin_line_of_staff_only(pin_hash: str) -> None:
    text = ('# kiosk\ndata_dir = "d"\n\n[staff]\nallow_exit = true  # for tests\n'
            'pin_hash = "scrypt$old"\n\n[display]\nkiosk_mode = false\n')
    out = edit_pin_hash(text, pin_hash)
    assert out == text.replace('pin_hash = "scrypt$old"', f'pin_hash = "{pin_hash}"')


def test_edit_adds_the_line_under_an_existing_header(pin_hash: str) -> None:
    text = 'data_dir = "d"\n[staff]   # staff mode\nallow_exit = false\n[idle]\nwarn_after_s = 5\n'
    out = edit_pin_hash(text, pin_hash)
    assert out.splitlines() == ['data_dir = "d"', "[staff]   # staff mode",
                                f'pin_hash = "{pin_hash}"', "allow_exit = false", "[idle]",
                                "warn_after_s = 5"]


def test_edit_appends_a_table_and_keeps_crlf(pin_hash: str) -> None:
    out = edit_pin_hash('data_dir = "d"\r\n[idle]\r\nwarn_after_s = 5', pin_hash)
    assert out == (f'data_dir = "d"\r\n[idle]\r\nwarn_after_s = 5\r\n\r\n[staff]\r\n'
                   f'pin_hash = "{pin_hash}"\r\n')


def test_edit_does_not_touch_a_pin_hash_of_another_table(pin_hash: str) -> None:
    # Not a valid kiosk config (unknown key), but the edit must not be fooled by it.
    text = '[display]\npin_hash = "x"\n[staff]\nallow_exit = true\n'
    out = edit_pin_hash(text, pin_hash)
    assert '[display]\npin_hash = "x"\n' in out
    assert f'[staff]\npin_hash = "{pin_hash}"\nallow_exit = true\n' in out


@pytest.mark.parametrize("text", ['staff.pin_hash = "scrypt$old"\n',
                                  'staff = { allow_exit = true }\n',
                                  "data_dir = \n"])
def test_edit_refuses_what_it_cannot_edit_as_text(text: str, pin_hash: str) -> None:
    with pytest.raises(ConfigEditError):
        edit_pin_hash(text, pin_hash)


# -- kiosk set-pin, as staff run it -----------------------------------------------------------

def _set_pin(config: Path | None, stdin: str, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "kiosk"]
    if config is not None:
        args += ["--config", str(config)]
    run_env = {**os.environ, **(env or {})}
    if config is None and "KIOSK_CONFIG" not in (env or {}):
        run_env.pop("KIOSK_CONFIG", None)
    return subprocess.run([*args, "set-pin"], input=stdin, capture_output=True, text=True,
                          timeout=60, env=run_env)


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kiosk.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\n{text}', encoding="utf-8")
    return path


def _no_pin_anywhere(done: subprocess.CompletedProcess[str], data_dir: Path, pin: str) -> None:
    assert pin not in done.stdout and pin not in done.stderr
    for log in (data_dir / "logs").glob("*.log*") if data_dir.exists() else []:
        assert pin not in log.read_text(encoding="utf-8")


def test_set_pin_writes_a_hash_that_verifies_and_loads(tmp_path: Path) -> None:
    config = _config(tmp_path, "")
    done = _set_pin(config, f"{PIN}\n{PIN}\n")
    assert done.returncode == 0, done.stderr
    cfg = config_mod.load(config)
    assert cfg.staff.pin_hash is not None and verify_pin(PIN, cfg.staff.pin_hash)
    assert cfg.data_dir == tmp_path / "data"
    assert "staff_pin_set" in (tmp_path / "data" / "logs" / "kiosk.log").read_text()
    _no_pin_anywhere(done, tmp_path / "data", PIN)
    assert PIN not in config.read_text()


def test_set_pin_keeps_other_keys_comments_and_mode(tmp_path: Path) -> None:
    rest = ('# the hall kiosk\nlanguages = ["en", "ar"]\n\n[staff]\n'
            'pin_hash = "scrypt$15$8$1$old$old"   # replaced\nallow_exit = true\n\n'
            '[display]\nkiosk_mode = false  # development\n')
    config = _config(tmp_path, rest)
    config.chmod(0o640)
    before = config.read_text().splitlines()
    done = _set_pin(config, "000000\n000000\n")
    assert done.returncode == 0, done.stderr
    after = config.read_text().splitlines()
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert len(changed) == 1 and after[changed[0]].startswith('pin_hash = "scrypt$15$8$1$')
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    cfg = config_mod.load(config)
    assert verify_pin("000000", cfg.staff.pin_hash or "")
    assert cfg.staff.allow_exit is True and cfg.display.kiosk_mode is False
    assert cfg.languages == ("en", "ar")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_set_pin_repairs_a_config_with_a_plain_pin(tmp_path: Path) -> None:
    config = _config(tmp_path, '[staff]\npin_hash = "1234"\n')
    with pytest.raises(config_mod.ConfigError):
        config_mod.load(config)
    done = _set_pin(config, "123456\n123456\n")
    assert done.returncode == 0, done.stderr
    assert verify_pin("123456", config_mod.load(config).staff.pin_hash or "")


def test_set_pin_follows_kiosk_config(tmp_path: Path) -> None:
    config = _config(tmp_path, "")
    done = _set_pin(None, f"{PIN}\n{PIN}\n", env={"KIOSK_CONFIG": str(config)})
    assert done.returncode == 0, done.stderr
    assert verify_pin(PIN, config_mod.load(config).staff.pin_hash or "")


@pytest.mark.parametrize(("stdin", "phrase"), [
    (f"{PIN}\n{PIN}7\n", "differ"),
    ("12\n12\n", "6 to 12 digits"),
    ("12ab\n12ab\n", "6 to 12 digits"),
    (f"{PIN}\n", "twice"),
    ("", "twice"),
])
def test_set_pin_refuses_and_leaves_the_file(tmp_path: Path, stdin: str, phrase: str) -> None:
    config = _config(tmp_path, "[staff]\nallow_exit = true\n")
    before = config.read_bytes()
    done = _set_pin(config, stdin)
    assert done.returncode == 2
    assert phrase in done.stderr and "nothing was changed" in done.stderr
    assert config.read_bytes() == before
    _no_pin_anywhere(done, tmp_path / "data", PIN)


def test_set_pin_on_a_terminal_asks_with_getpass(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from kiosk.staff import pin as pin_mod

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    asked: list[str] = []

    def getpass(prompt: str) -> str:
        asked.append(prompt)
        return PIN

    monkeypatch.setattr(pin_mod.getpass, "getpass", getpass)
    # In this process, leave the test run's logging as it is (set-pin points it at the
    # kiosk's data directory).
    monkeypatch.setattr(pin_mod.logs, "setup", lambda *args, **kwargs: None)
    config = _config(tmp_path, "")
    err = io.StringIO()
    assert pin_mod.set_pin_command(config, stdin=Terminal(), stderr=err) == 0
    assert len(asked) == 2 and all("PIN" in q for q in asked)
    assert verify_pin(PIN, config_mod.load(config).staff.pin_hash or "")
    assert PIN not in err.getvalue()


def test_set_pin_without_a_config_file_refuses(tmp_path: Path) -> None:
    done = _set_pin(None, f"{PIN}\n{PIN}\n")
    assert done.returncode == 2 and "no config file" in done.stderr
    done = _set_pin(tmp_path / "missing.toml", f"{PIN}\n{PIN}\n")
    assert done.returncode == 2 and "no config file" in done.stderr
    assert not (tmp_path / "missing.toml").exists()


# -- the lockout --------------------------------------------------------------------------------

class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def staff_log() -> Iterator[list[str]]:
    """The messages logged under kiosk.staff during the test (whatever logs.setup did)."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("kiosk.staff")
    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)
    assert not any(PIN in line for line in lines)


def test_the_log_says_what_happened_and_never_the_pin(tmp_path: Path, pin_hash: str,
                                                       staff_log: list[str]) -> None:
    gate = PinGate(tmp_path, pin_hash, clock=Clock(), max_failures=2)
    gate.try_pin(PIN)
    gate.try_pin("1111")
    gate.try_pin("2222")
    gate.try_pin(PIN)
    assert staff_log == ["staff_pin_ok", "staff_pin_wrong failures=1 left=1",
                         "staff_locked failures=2 seconds=300.0",
                         "staff_pin_refused reason=locked seconds_left=300"]


def _lock_doc(data_dir: Path) -> dict:
    return json.loads((data_dir / LOCK_FILE).read_text())


def test_right_pin_opens_and_resets_the_count(tmp_path: Path, pin_hash: str) -> None:
    gate = PinGate(tmp_path, pin_hash, clock=Clock())
    assert gate.try_pin(PIN).verdict is OPEN
    first = gate.try_pin("0000")
    assert (first.verdict, first.failures_left) == (WRONG, 4)
    assert gate.try_pin("0001").failures_left == 3
    assert gate.try_pin(PIN).opened
    assert _lock_doc(tmp_path) == {"failures": 0, "locked_until": 0.0}
    assert gate.try_pin("0000").failures_left == 4  # counting from zero again


def test_five_failures_lock_and_a_restart_does_not_unlock(tmp_path: Path, pin_hash: str) -> None:
    clock = Clock()
    gate = PinGate(tmp_path, pin_hash, clock=clock)
    for left in (4, 3, 2):
        assert gate.try_pin("1111").failures_left == left
    # The app restarts (a power cut): the count carries on.
    gate = PinGate(tmp_path, pin_hash, clock=clock)
    assert gate.try_pin("1111").failures_left == 1
    locking = gate.try_pin("1111")
    assert (locking.verdict, locking.failures_left, locking.seconds_left) == (WRONG, 0, 300)

    clock.now += 10
    again = PinGate(tmp_path, pin_hash, clock=clock)  # restarted while locked
    refused = again.try_pin(PIN)
    assert refused.verdict is LOCKED and refused.seconds_left == pytest.approx(290)
    assert again.seconds_locked() == pytest.approx(290)

    clock.now += 289
    assert PinGate(tmp_path, pin_hash, clock=clock).try_pin(PIN).verdict is LOCKED
    clock.now += 1
    later = PinGate(tmp_path, pin_hash, clock=clock)
    assert later.seconds_locked() == 0
    assert later.try_pin(PIN).verdict is OPEN


def test_while_locked_nothing_is_counted_or_extended(tmp_path: Path, pin_hash: str) -> None:
    clock = Clock()
    gate = PinGate(tmp_path, pin_hash, clock=clock, max_failures=2, lock_s=60)
    gate.try_pin("1111")
    gate.try_pin("1111")
    until = _lock_doc(tmp_path)["locked_until"]
    for _ in range(5):
        clock.now += 5
        assert gate.try_pin("1111").verdict is LOCKED
    assert _lock_doc(tmp_path)["locked_until"] == until
    clock.now = until
    assert gate.try_pin("1111").failures_left == 1  # a fresh round after the lock


@pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"failures": -1, "locked_until": 0}',
                                     b'{"failures": "2", "locked_until": 0}',
                                     b'{"failures": 0, "locked_until": NaN}',
                                     b'{"failures": 0}', b"\xff\xfe"])
def test_a_corrupt_lock_file_fails_closed(tmp_path: Path, pin_hash: str, content: bytes,
                                          staff_log: list[str]) -> None:
    (tmp_path / LOCK_FILE).write_bytes(content)
    clock = Clock()
    gate = PinGate(tmp_path, pin_hash, clock=clock)
    outcome = gate.try_pin(PIN)
    assert outcome.verdict is LOCKED and outcome.seconds_left == 300
    assert any(line.startswith("staff_lock_file_bad kind=") for line in staff_log)
    # Rewritten as a lock of lock_s from then: it ends.
    assert _lock_doc(tmp_path) == {"failures": 0, "locked_until": clock.now + 300}
    clock.now += 300
    assert gate.try_pin(PIN).verdict is OPEN


def test_an_unreadable_lock_file_fails_closed(tmp_path: Path, pin_hash: str) -> None:
    (tmp_path / LOCK_FILE).mkdir()  # a folder where the file should be: unreadable
    gate = PinGate(tmp_path, pin_hash, clock=Clock())
    assert gate.try_pin(PIN).verdict is LOCKED
    assert gate.try_pin(PIN).verdict is LOCKED  # and cannot be rewritten: stays locked


def test_an_unwritable_lock_file_still_counts_in_memory(tmp_path: Path, pin_hash: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    gate = PinGate(tmp_path, pin_hash, clock=Clock(), max_failures=3)
    gate.try_pin("1111")

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lockout.tempfile, "mkstemp", full_disk)
    assert gate.try_pin("1111").failures_left == 1
    assert gate.try_pin("1111").seconds_left == 300  # locked, though the file says 1
    assert gate.try_pin(PIN).verdict is LOCKED


def test_a_clock_set_back_does_not_lock_for_days(tmp_path: Path, pin_hash: str) -> None:
    clock = Clock()
    gate = PinGate(tmp_path, pin_hash, clock=clock, max_failures=1)
    gate.try_pin("1111")
    clock.now -= 86_400  # the clock was a day ahead when the lock was written
    assert gate.seconds_locked() == 300
    clock.now += 300
    assert gate.try_pin(PIN).verdict is OPEN


def test_no_pin_configured(tmp_path: Path) -> None:
    for stored in (None, "scrypt$not-a-hash"):
        gate = PinGate(tmp_path, stored, clock=Clock())
        assert not gate.configured
        assert gate.try_pin("1234").verdict is NO_PIN
    assert not (tmp_path / LOCK_FILE).exists()
