"""The kiosk's TOML config: validated at start, with errors that name key and expectation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kiosk import config
from sync.envelope import X25519Identity
from sync.envelope.mlkem import MlkemIdentity


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kiosk.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_run_the_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(config.ENV_VAR, raising=False)
    cfg = config.load()
    assert cfg.server_url == "http://127.0.0.1:8765"
    assert cfg.recording.max_answer_s == 300
    assert cfg.audio.input_device is None


def test_full_file_is_read(tmp_path: Path) -> None:
    pq = str(MlkemIdentity.generate().recipient())
    classic = str(X25519Identity.generate().recipient())
    path = _write(tmp_path, f"""
data_dir = "kdata"
server_url = "https://central.example/"
recipients = ["{pq}", "{classic}"]
allow_classic_recipients = true
languages = ["en", "ar"]
[idle]
warn_after_s = 45
discard_after_s = 15
[recording]
max_answer_s = 120
silence_threshold_dbfs = -45
opus_bitrate_kbps = 24
[audio]
input_device = "USB Mic"
output_device = 3
""")
    cfg = config.load(path)
    assert cfg.data_dir == tmp_path / "kdata"
    assert cfg.server_url == "https://central.example"
    assert cfg.recipients == (pq, classic)
    assert cfg.idle.warn_after_s == 45.0
    assert cfg.recording.max_answer_s == 120.0
    assert cfg.recording.opus_bitrate_kbps == 24.0 and cfg.allow_classic_recipients
    assert cfg.audio.input_device == "USB Mic" and cfg.audio.output_device == 3


def test_env_var_chooses_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(config.ENV_VAR, str(_write(tmp_path, 'languages = ["fr"]\n')))
    assert config.load().languages == ("fr",)


@pytest.mark.parametrize(("text", "message"), [
    ('[recording]\nmax_answer_s = "five minutes"\n',
     "recording.max_answer_s must be a positive number of seconds, got 'five minutes' (str)"),
    ("[idle]\nwarn_after_s = true\n",
     "idle.warn_after_s must be a positive number of seconds, got True (bool)"),
    ('recipients = "age1abc"\n', "recipients must be a list of strings, got 'age1abc' (str)"),
    ('recipients = ["AGE-SECRET-KEY-1ABC"]\n', "recipients[0] must be an age recipient"),
    ('recipients = ["age1qqqqqqqqqqqqqqqqqqqqqqqq"]\n', "recipients[0] must be an age recipient"),
    ("server_url = 8765\n", "server_url must be a non-empty string, got 8765 (int)"),
    ("[audio]\ninput_device = 1.5\n", "audio.input_device must be a device name (string) or"
                                      " index (integer), got 1.5 (float)"),
    ('recording = 3\n', "recording must be a table ([recording]), got 3 (int)"),
    ('[recording]\nmax_seconds = 3\n', "unknown key recording.max_seconds"),
    ('data_dir = "x"\ndata-dir = "y"\n', "unknown key data-dir"),
    ('server_url = "x\n', "is not valid TOML"),
    ("[recording]\nopus_bitrate_kbps = 2\n",
     "recording.opus_bitrate_kbps must be a bitrate in kbit/s from 6 to 256, got 2 (int)"),
    ('allow_classic_recipients = "yes"\n',
     "allow_classic_recipients must be true or false, got 'yes' (str)"),
])
def test_bad_file_names_the_key_and_what_was_expected(tmp_path: Path, text: str,
                                                      message: str) -> None:
    with pytest.raises(config.ConfigError) as err:
        config.load(_write(tmp_path, text))
    assert message in str(err.value)
    assert str(tmp_path / "kiosk.toml") in str(err.value)


def test_kiosk_command_reports_a_wrong_type_and_exits(tmp_path: Path) -> None:
    path = _write(tmp_path, '[recording]\nmax_answer_s = "long"\n')
    done = subprocess.run([sys.executable, "-m", "kiosk", "--config", str(path),
                           "check-audio"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"kiosk: bad configuration: {path}: recording.max_answer_s must be a positive"
        " number of seconds, got 'long' (str)")


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="cannot read config file"):
        config.load(tmp_path / "nope.toml")


def test_mixed_recipients_are_refused_at_load_unless_meant(tmp_path: Path) -> None:
    pq = str(MlkemIdentity.generate().recipient())
    classic = str(X25519Identity.generate().recipient())
    with pytest.raises(config.ConfigError) as err:
        config.load(_write(tmp_path, f'recipients = ["{pq}", "{classic}"]\n'))
    assert "recipients mixes post-quantum (age1pq1...) and classic X25519" in str(err.value)
    assert "allow_classic_recipients = true" in str(err.value)
    # Either kind alone is fine, and so is the mix when the file says it is meant.
    assert config.load(_write(tmp_path, f'recipients = ["{classic}"]\n')).recipients
    cfg = config.load(_write(tmp_path, f'recipients = ["{pq}", "{classic}"]\n'
                                       "allow_classic_recipients = true\n"))
    assert cfg.allow_classic_recipients and len(cfg.recipients) == 2


def test_publisher_key_staff_and_display_sections(tmp_path: Path) -> None:
    from sync.signing import SigningKey

    key = SigningKey.generate().verify_key
    cfg = config.load(_write(tmp_path, f'publisher_key = "{key}"\n'
                                       '[staff]\npin_hash = "scrypt$15$8$1$c2FsdA$aGFzaA"\n'
                                       "allow_exit = true\n[display]\nkiosk_mode = false\n"))
    assert cfg.publisher_key == str(key)
    assert cfg.staff.allow_exit and cfg.staff.pin_hash.startswith("scrypt$")
    assert not cfg.display.kiosk_mode
    defaults = config.load(_write(tmp_path, ""))
    assert defaults.display.kiosk_mode and defaults.staff.pin_hash is None


@pytest.mark.parametrize(("text", "message"), [
    ('publisher_key = "idrverify1qqqq"\n', "publisher_key must be a publishing key"),
    ('[staff]\npin_hash = "1234"\n', "staff.pin_hash must be a PIN hash written by"),
    ("[display]\nkiosk_mode = 1\n", "display.kiosk_mode must be true or false"),
])
def test_bad_staff_and_publisher_values(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(config.ConfigError, match=message):
        config.load(_write(tmp_path, text))
