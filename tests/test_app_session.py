"""The defender's session in the real app: Kivy under Xvfb, driven by simulated touches
through the test driver, recording espeak-ng speech from the PulseAudio virtual
microphone, sealing to a post-quantum team key, watched by inotify all along."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kiosk.session.receipt import verify_code
from kiosk.textlayout import shape
from kiosk.vault.store import SUBMITTED, Store
from sync.envelope import open_bytes, open_sealed
from sync.envelope.mlkem import MlkemIdentity
from sync.withdrawal import withdrawal_key
from tests.harness.fswatch import FsWatch, kiosk_data_violations
from tests.harness.kiosk_app import KioskProcess, png_pixels
from tests.harness.pulse import VirtualAudio, read_wav
from tests.test_recorder_integration import assert_same_speech

NAME = "Amina Diallo Ndiaye"
CONTACT = "amina.ndiaye@example.org"
COUNTRY = "SN"


@pytest.fixture(scope="module")
def team() -> MlkemIdentity:
    return MlkemIdentity.generate()


def config_text(team: MlkemIdentity, *, warn: float = 120, discard: float = 60) -> str:
    return (f'recipients = ["{team.recipient()}"]\n'
            f"[idle]\nwarn_after_s = {warn}\ndiscard_after_s = {discard}\n")


def wait_until(check, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def to_questions(app: KioskProcess, *, lang: str = "en", named: bool = True) -> None:
    app.wait_for_screen("attract")
    app.tap("share_button")
    app.wait_for_screen("language")
    app.tap(f"lang_{lang}")
    app.wait_for_screen("who")
    app.tap("next_button")
    app.wait_for_screen("safety")
    app.tap("next_button")
    app.wait_for_screen("consent")
    for button in ("publish_yes", "name_show" if named else "name_anonymous", "contact_yes"):
        app.tap(button)
    app.tap("next_button")
    app.wait_for_screen("identity")
    if named:
        app.call("call", method="type_text", args=[NAME])
    app.tap("contact_field")
    app.call("call", method="type_text", args=[CONTACT])
    app.call("call", method="select_country", args=[COUNTRY])
    app.tap("next_button")
    app.wait_for_screen("questions")
    time.sleep(2.5)  # the microphone armed on entry delivers its first block


def record_answer(app: KioskProcess, audio: VirtualAudio, wav: Path) -> str:
    """Record ``wav`` as the current question's answer; returns the part's name."""
    before = app.call("session")
    prompt = before["answers"]
    current = list(prompt)[before["question"]]
    old = prompt[current]
    app.tap("rerecord_button" if old else "record_button")
    time.sleep(0.3)
    player = audio.play_into_mic(wav)
    assert player.wait(30) == 0
    time.sleep(0.5)
    app.tap("record_button")  # now "Stop"
    wait_until(lambda: app.call("session")["answers"][current] not in (None, old), 15,
               "the answer to be sealed")
    return app.call("session")["answers"][current]


@pytest.fixture(scope="module")
def session(tmp_path_factory, virtual_audio: VirtualAudio, virtual_display: str, speech,
            team: MlkemIdentity):
    """One complete named session, watched from start to end."""
    import os

    work = tmp_path_factory.mktemp("app-session")
    data = work / "data"
    data.mkdir()
    config = work / "kiosk.toml"
    config.write_text(f'data_dir = "{data}"\n' + config_text(team))
    env = {**os.environ, **virtual_audio.env, "DISPLAY": virtual_display}
    env.pop("KIOSK_CONFIG", None)
    wav = speech("en")
    with FsWatch(data) as watch:
        app = KioskProcess(config=config, workdir=work, env=env,
                           screenshot_dir=work / "shots")
        try:
            to_questions(app)
            first = record_answer(app, virtual_audio, wav)
            outbox = data / "outbox"
            (submission_dir,) = outbox.iterdir()
            assert (submission_dir / f"{first}.age").exists()
            second = record_answer(app, virtual_audio, wav)  # "Record again"
            app.tap("next_button")
            for _ in range(3):
                # Apart, as a person taps: two taps within 250 ms at one place are one.
                time.sleep(0.35)
                app.tap("skip_button")
            app.wait_for_screen("review")
            app.tap("submit_button")
            app.wait_for_screen("receipt", 30)
            code = app.text("code").split()
            state = app.call("session")
            app.tap("done_button")
            app.wait_for_screen("attract")
        finally:
            app.close()
    return {"data": data, "submission_dir": submission_dir, "first": first,
            "second": second, "code": "-".join(code), "state": state, "watch": watch,
            "wav": wav}


def test_a_complete_session_is_sealed_and_submitted(session, team) -> None:
    submission_dir = session["submission_dir"]
    store = Store.in_data_dir(session["data"])
    try:
        assert store.submission_state(submission_dir.name) == SUBMITTED
        stored_hash = store.receipt_hash(submission_dir.name)
        stored_key = store.withdrawal_key(submission_dir.name)
    finally:
        store.close()
    # The receipt code shown matches the slow hash stored; the code itself is nowhere.
    assert verify_code(session["code"], stored_hash)
    # And the deterministic key the index carries for POST /withdraw is the code's.
    assert stored_key == withdrawal_key(session["code"].upper().replace("-", " "))
    manifest = json.loads(open_bytes((submission_dir / "manifest.json.age").read_bytes(),
                                     [team]))
    assert manifest["name"] == NAME and manifest["display_name"] == NAME
    assert manifest["country"] == COUNTRY and manifest["contact"] == CONTACT
    assert manifest["consent"] == {"publish_voice": True, "show_name": True,
                                   "may_contact": True}
    assert manifest["language"] == "en"
    assert manifest["prompt_ids"] == ["work", "why", "change", "message"]
    assert [a["skipped"] for a in manifest["answers"]] == [False, True, True, True]
    assert [p["name"] for p in manifest["parts"]] == [session["second"]]


def test_the_answer_is_the_speech_fed_in(session, team) -> None:
    source, _rate = read_wav(session["wav"])
    with open_sealed(session["submission_dir"] / f"{session['second']}.age",
                     identities=[team]) as f:
        opus = f.read()
    assert opus.startswith(b"OggS")
    decoded, rate = sf.read(io.BytesIO(opus), dtype="int16")
    assert rate == 48_000
    assert_same_speech(source, decoded)


def test_a_re_recorded_answer_replaces_the_old_part(session) -> None:
    assert session["first"] != session["second"]
    names = sorted(p.name for p in session["submission_dir"].iterdir())
    assert names == sorted([f"{session['second']}.age", "manifest.json.age"])
    # It existed, sealed, until the new take replaced it.
    watched = {p.name for p in session["watch"].files}
    assert f"{session['first']}.age" in watched


def test_nothing_personal_was_written_in_the_clear(session) -> None:
    watch = session["watch"]
    assert kiosk_data_violations(watch, session["data"]) == []
    written = list(watch.contents())
    assert any(p.name == "kiosk.log" for p, _ in written)
    source, _rate = read_wav(session["wav"])
    pcm = source.astype("<i2").tobytes()
    blocks = [pcm[i:i + 2048] for i in range(0, len(pcm) - 2048, 2048)]
    blocks = [b for b in blocks if b.count(b[:1]) != len(b)]
    code = session["code"].encode()
    for path, data in written:
        for secret in (NAME, CONTACT, NAME.split()[0], CONTACT.split("@")[0]):
            assert secret.encode() not in data, f"{path} holds {secret!r}"
        assert code not in data and code.replace(b"-", b" ") not in data, path
        for block in blocks:
            assert data.find(block) < 0, f"{path} holds the speech in clear"


def test_the_scan_finds_what_is_planted(session, tmp_path) -> None:
    # The same checks catch the name, the contact and audio when they are there.
    planted = tmp_path / "data"
    (planted / "logs").mkdir(parents=True)
    source, _rate = read_wav(session["wav"])
    with FsWatch(planted) as watch:
        (planted / "logs" / "kiosk.log").write_text(f"name={NAME} contact={CONTACT}\n")
        (planted / "answer.raw").write_bytes(source.astype("<i2").tobytes()[10_000:20_000])
    assert any("answer.raw" in v for v in kiosk_data_violations(watch, planted))
    contents = dict(watch.contents())
    assert NAME.encode() in contents[planted / "logs" / "kiosk.log"]


def test_an_abandoned_session_is_shredded_after_the_idle_timeout(
        kiosk_app, virtual_audio: VirtualAudio, speech, team, tmp_path) -> None:
    # Longer than any pause of the steps before the answer, which must not time out.
    app = kiosk_app(config_text(team, warn=5, discard=3))
    to_questions(app, named=False)
    record_answer(app, virtual_audio, speech("en"))
    data = tmp_path / "data"
    (folder,) = (data / "outbox").iterdir()
    assert any(folder.iterdir())
    # Nobody touches the screen: the warning, with its countdown, then the discard.
    wait_until(lambda: "still_here_button" in app.call("overlay"), 10, "the idle warning")
    app.screenshot("still-there")
    app.wait_for_screen("attract", 10)
    assert not folder.exists()
    store = Store.in_data_dir(data)
    try:
        assert store.submission_state(folder.name) is None
        assert store.parts(folder.name) == []
    finally:
        store.close()
    assert app.call("session")["language"] is None


def test_the_questions_cannot_be_reached_without_consent(kiosk_app, team) -> None:
    app = kiosk_app(config_text(team))
    app.wait_for_screen("attract")
    app.tap("share_button")
    app.wait_for_screen("language")
    app.tap("lang_en")
    app.wait_for_screen("who")
    app.tap("next_button")
    app.wait_for_screen("safety")
    app.tap("next_button")
    app.wait_for_screen("consent")
    app.tap("next_button")  # nothing chosen
    assert "ok_button" in app.call("overlay")
    app.tap("ok_button")
    for button in ("publish_no", "name_anonymous", "contact_no"):
        app.tap(button)
    app.tap("next_button")  # all answered, but not the voice: still refused
    assert app.screen() == "consent" and "ok_button" in app.call("overlay")
    app.tap("ok_button")
    app.tap("publish_yes")
    app.tap("next_button")
    app.wait_for_screen("identity")


def test_arabic_screens_read_right_to_left_with_shaped_letters(kiosk_app, team) -> None:
    app = kiosk_app(config_text(team))
    app.wait_for_screen("attract")
    app.tap("share_button")
    app.wait_for_screen("language")
    app.tap("lang_ar")
    app.wait_for_screen("who")
    time.sleep(0.4)
    logical = app.call("source_text", id="title")
    shown = app.text("title")
    assert any("\u0600" <= c <= "\u06ff" for c in logical), logical  # translated
    # Shaped: joined presentation forms on screen, none in the logical text.
    assert not any("\ufb50" <= c <= "\ufeff" for c in logical)
    assert any("\ufb50" <= c <= "\ufeff" for c in shown)
    # Right to left: the first word read is the rightmost one drawn.
    first_word = logical.split()[0]
    assert shown.split("\n")[0].split()[-1] == shape(first_word)[::-1]
    # The buttons follow the reader's eye: "back" on the right, "next" on the left.
    pixels = png_pixels(app.screenshot("who-ar"))
    back_x = app.call("call", method="to_window_x", args=["back_button"])
    next_x = app.call("call", method="to_window_x", args=["next_button"])
    assert back_x > next_x
    # The title's ink sits against the right margin.
    title_rows = pixels[20:110]
    ink = np.flatnonzero((title_rows.max(axis=2) > 200).any(axis=0))
    assert ink.max() > 1280 - 120 and ink.min() > 200, (ink.min(), ink.max())
