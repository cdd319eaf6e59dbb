"""Translations: the catalogues, the translators (plain and Kivy), prompts and countries."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import unicodedata
from pathlib import Path

import pytest
from babel.messages.extract import extract
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from kiosk import i18n
from kiosk.countries import EXCLUDED, codes, countries, country_name
from kiosk.i18n import LANGUAGES, MESSAGES, Translator, extract_kv, translation
from kiosk.prompts import Prompt, PromptsError, load_prompts

REPO = Path(__file__).resolve().parent.parent
LOCALE = REPO / "assets" / "locale"
TRANSLATED = ("fr", "es", "ar")
PLACEHOLDER = re.compile(r"\{[^{}]*\}")


def _catalogue(language: str):
    with (LOCALE / language / "LC_MESSAGES" / "kiosk.po").open("rb") as f:
        return read_po(f, locale=language)


@pytest.fixture(autouse=True)
def _fresh_catalogues():
    i18n.clear_cache()
    yield
    i18n.clear_cache()


# -- the catalogues ----------------------------------------------------------------------

@pytest.mark.parametrize("language", LANGUAGES)
def test_each_catalogue_compiles_and_its_mo_gives_its_translations(language: str) -> None:
    import gettext

    catalog = _catalogue(language)
    buf = io.BytesIO()
    write_mo(buf, catalog, use_fuzzy=False)
    buf.seek(0)
    compiled = gettext.GNUTranslations(buf)
    messages = [m for m in catalog if m.id]
    assert len(messages) >= 20
    for m in messages:
        assert compiled.gettext(m.id) == (m.string or m.id)


@pytest.mark.parametrize("language", TRANSLATED)
def test_no_entry_is_untranslated_or_fuzzy(language: str) -> None:
    catalog = _catalogue(language)
    assert not catalog.fuzzy
    bad = [m.id for m in catalog if m.id and (m.fuzzy or not m.string)]
    assert bad == [], f"{language}: translate these (or run deploy/extract_messages.py)"


def test_english_catalogue_leaves_every_string_to_its_msgid() -> None:
    assert all(not m.string for m in _catalogue("en") if m.id)


@pytest.mark.parametrize("language", TRANSLATED)
def test_placeholders_and_line_breaks_survive_translation(language: str) -> None:
    for m in _catalogue(language):
        if not m.id:
            continue
        assert sorted(PLACEHOLDER.findall(m.string)) == sorted(PLACEHOLDER.findall(m.id)), m.id
        assert m.string.count("\n") == m.id.count("\n"), m.id
        assert m.string == m.string.strip(), m.id


def test_arabic_translations_are_in_arabic_script() -> None:
    for m in _catalogue("ar"):
        if m.id:
            letters = [ch for ch in PLACEHOLDER.sub("", m.string) if ch.isalpha()]
            assert letters and all("ARABIC" in unicodedata.name(ch) for ch in letters), m.id


def test_the_setup_command_compiles_every_catalogue(tmp_path: Path) -> None:
    # The exact command deploy/setup.sh runs, on a copy of the catalogues.
    shutil.copytree(LOCALE, tmp_path / "locale")
    pybabel = Path(sys.executable).with_name("pybabel")
    subprocess.run([str(pybabel), "-q", "compile", "-d", str(tmp_path / "locale"),
                    "-D", "kiosk"], check=True, timeout=60)
    for language in LANGUAGES:
        assert (tmp_path / "locale" / language / "LC_MESSAGES" / "kiosk.mo").stat().st_size > 0


def test_catalogues_are_up_to_date_with_the_sources() -> None:
    """Every msgid in kiosk/**.py, kiosk/**.kv and the prompts is in every catalogue,
    translated; if this fails, run the script and translate what it lists."""
    result = subprocess.run([sys.executable, str(REPO / "deploy" / "extract_messages.py"),
                             "--check"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 untranslated, 0 fuzzy" in result.stdout


def test_kv_extractor_finds_translator_calls_and_bare_text_literals() -> None:
    kv = textwrap.dedent('''\
        #:kivy 2.3
        <Example@BoxLayout>:
            Label:
                text: tr._("Share your story")
            RtlLabel:
                source_text: tr._("A sentence that goes on "
                                  "over two lines")
                language: tr.language
            Button:
                text: tr.pgettext("button", "Record")
                on_release: app.record()
            Label:
                text: "Touch to begin"
            Label:
                text: "42"
        ''').encode()
    found = [(msg, comments) for _line, msg, comments, _ctx in
             extract(extract_kv, io.BytesIO(kv),
                     keywords={"_": None, "pgettext": ((1, "c"), 2)})]
    messages = [msg for msg, _comments in found]
    assert "Share your story" in messages
    assert "A sentence that goes on over two lines" in messages
    assert "Record" in messages
    assert "Touch to begin" in messages  # bare literal: extracted, with a note
    assert "42" not in messages
    assert dict(found)["Touch to begin"] == [i18n.UNWRAPPED_COMMENT]


# -- the plain translator -----------------------------------------------------------------

def test_switching_language_changes_what_gettext_returns() -> None:
    tr = Translator()
    assert tr.language == "en" and not tr.is_rtl
    assert tr._("Share your story") == "Share your story"
    tr.set_language("fr")
    assert tr._("Share your story") == "Partagez votre histoire"
    tr.set_language("es")
    assert tr.gettext("Share your story") == "Comparta su historia"
    tr.set_language("ar")
    assert tr.is_rtl
    assert tr._("Share your story") == "شارك قصتك"


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_missing_msgid_falls_back_to_the_english_msgid(language: str) -> None:
    tr = Translator(language)
    assert tr._("A sentence no catalogue has") == "A sentence no catalogue has"
    assert tr.pgettext("button", "Nothing like this") == "Nothing like this"
    assert tr.ngettext("{n} answer", "{n} answers", 1) == "{n} answer"
    assert tr.ngettext("{n} answer", "{n} answers", 3) == "{n} answers"
    assert tr._("") == ""  # not the catalogue's header


def test_unknown_language_is_refused() -> None:
    with pytest.raises(ValueError):
        Translator("de")


def test_translation_falls_back_to_english_where_there_is_no_catalogue(tmp_path: Path,
                                                                       monkeypatch) -> None:
    monkeypatch.setattr(i18n, "LOCALE_DIR", tmp_path)
    i18n.clear_cache()
    assert translation("fr").gettext("Share your story") == "Share your story"


def test_a_stale_or_missing_mo_gives_way_to_the_po(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "fr" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    po = folder / "kiosk.po"
    shutil.copy(LOCALE / "fr" / "LC_MESSAGES" / "kiosk.po", po)
    monkeypatch.setattr(i18n, "LOCALE_DIR", tmp_path)

    i18n.clear_cache()  # no .mo at all: the .po, compiled in memory
    assert translation("fr").gettext("Share your story") == "Partagez votre histoire"

    # A .mo older than the .po (made before a translator's edit) is not used.
    catalog = _catalogue("fr")
    catalog.get("Share your story").string = "Ancienne traduction"
    with (folder / "kiosk.mo").open("wb") as f:
        write_mo(f, catalog)
    os.utime(folder / "kiosk.mo", (1_000_000, 1_000_000))
    i18n.clear_cache()
    assert translation("fr").gettext("Share your story") == "Partagez votre histoire"

    # A fresh .mo is what gettext reads.
    os.utime(folder / "kiosk.mo", None)
    os.utime(po, (1_000_000, 1_000_000))
    i18n.clear_cache()
    assert translation("fr").gettext("Share your story") == "Ancienne traduction"


def test_a_broken_catalogue_shows_english(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "fr" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    (folder / "kiosk.mo").write_bytes(b"not a catalogue")
    monkeypatch.setattr(i18n, "LOCALE_DIR", tmp_path)
    i18n.clear_cache()
    assert Translator("fr")._("Share your story") == "Share your story"


def test_messages_have_the_ids_the_session_and_recorder_use() -> None:
    assert {"consent_required", "name_required", "answer_required", "silent", "device_lost",
            "disk_full", "max_length", "write_failed", "no_microphone",
            "submit_failed"} <= set(MESSAGES)
    assert MESSAGES["answer_required"] == ("Please record at least one answer before you"
                                           " submit.")
    for language in TRANSLATED:
        tr = Translator(language)
        for message_id, english in MESSAGES.items():
            assert tr.message(message_id, code="K7") != english.format(code="K7"), message_id
    assert "K7-4QX9" in Translator("ar").message("submitted", code="K7-4QX9")


def test_recorder_sentences_are_the_same_msgids() -> None:
    from kiosk.audio import take

    for reason in take.EndReason:
        if reason in take.MESSAGES:
            assert take.MESSAGES[reason] == MESSAGES[reason.value]
    assert take.SILENT_MESSAGE == MESSAGES["silent"]
    assert take.NO_AUDIO_MESSAGE == MESSAGES["no_audio"]
    assert take.NOT_KEPT_MESSAGE == MESSAGES["not_kept"]
    assert str(take.storage_full_error()) == MESSAGES["storage_full"]


def test_the_text_modules_import_without_kivy() -> None:
    code = ("import sys, kiosk.i18n, kiosk.textlayout, kiosk.countries, kiosk.prompts;"
            " assert not [m for m in sys.modules if m.startswith('kivy')]")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=REPO)


# -- prompts ---------------------------------------------------------------------------------

def test_prompts_load_with_unique_ids_and_translations() -> None:
    prompts = load_prompts()
    assert 3 <= len(prompts) <= 5
    ids = [p.id for p in prompts]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", pid) for pid in ids)
    assert all(isinstance(p, Prompt) and p.text.endswith("?") and p.hint for p in prompts)
    for language in TRANSLATED:
        tr = Translator(language)
        for p in prompts:
            assert tr._(p.text) != p.text and tr._(p.hint) != p.hint


@pytest.mark.parametrize("body, problem", [
    ('[[prompt]]\nid = "a"\ntext = "Q?"\n[[prompt]]\nid = "a"\ntext = "R?"\n', "twice"),
    ('[[prompt]]\nid = "Bad Id"\ntext = "Q?"\n', "lower-case"),
    ('[[prompt]]\nid = "a"\n', "text is missing"),
    ('[[prompt]]\nid = "a"\ntext = "Q?"\ncolour = "red"\n', "unknown"),
    ('title = "no prompts"\n', "no [[prompt]]"),
    ('[[prompt]\n', "not valid TOML"),
])
def test_a_bad_prompts_file_is_refused_with_a_reason(tmp_path: Path, body: str,
                                                     problem: str) -> None:
    path = tmp_path / "prompts.toml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(PromptsError, match=re.escape(problem)):
        load_prompts(path)


# -- countries -------------------------------------------------------------------------------

def test_countries_are_named_in_each_language() -> None:
    assert dict(countries("fr"))["FR"] == "France"
    assert dict(countries("es"))["DE"] == "Alemania"
    assert country_name("fr", "fr") == "France"
    arabic = dict(countries("ar"))["FR"]
    assert all("ARABIC" in unicodedata.name(ch) for ch in arabic if ch.isalpha())


def test_countries_are_real_ones_only_and_the_same_in_every_language() -> None:
    listed = codes()
    assert 245 <= len(listed) <= 255
    assert all(re.fullmatch(r"[A-Z]{2}", code) for code in listed)
    assert not listed & EXCLUDED
    assert {"FR", "SY", "PS", "TW", "XK", "EH", "AQ"} <= listed
    for language in LANGUAGES:
        assert {code for code, _name in countries(language)} == listed
    for bad in ("001", "150", "ZZ", "EU", "XA"):
        with pytest.raises(KeyError):
            country_name(bad, "en")


def test_countries_sort_by_name_ignoring_case_and_accents() -> None:
    english = [name for _code, name in countries("en")]
    assert english.index("Åland Islands") == english.index("Afghanistan") + 1
    assert english.index("Åland Islands") < english.index("Albania")
    french = [name for _code, name in countries("fr")]
    assert french.index("Égypte") < french.index("Équateur") < french.index("Érythrée")
    assert french.index("Égypte") > french.index("Dominique")
    arabic = [name for _code, name in countries("ar")]
    assert arabic == sorted(arabic, key=lambda n: "".join(
        ch for ch in unicodedata.normalize("NFKD", n) if not unicodedata.combining(ch)))


# -- the Kivy translator, under Xvfb -----------------------------------------------------------

KIVY_TRANSLATOR_CHECK = r'''
import gc, json
from kivy.core.window import Window
from kivy.lang import Builder, global_idmap
from kiosk.i18n import kivy_translator

tr = kivy_translator()
out = {"same": kivy_translator() is tr and global_idmap["tr"] is tr}
root = Builder.load_string("""
BoxLayout:
    Label:
        id: share
        text: tr._("Share your story")
    Label:
        id: lang
        text: tr.language
    Label:
        id: unknown
        text: tr._("Not in any catalogue")
""")
ids = root.ids
seen = lambda: [ids.share.text, ids.lang.text, ids.unknown.text]
out["en"] = seen()
tr.switch_lang("fr"); out["fr"] = seen()
tr.switch_lang("ar"); out["ar"] = seen()
out["observers"] = tr.observer_count
extra = Builder.load_string('Label:\n    text: tr._("Listen to stories")\n')
out["with_extra"] = tr.observer_count
tr.switch_lang("es"); out["extra_es"] = extra.text
Builder.unbind_widget(extra.uid)
out["after_unbind"] = tr.observer_count
gone = Builder.load_string('Label:\n    text: tr._("Touch to begin")\n')
del gone; gc.collect()
tr.switch_lang("en")
out["after_gc_switch"] = tr.observer_count
out["back_en"] = seen()
print("RESULT " + json.dumps(out))
'''


def run_kivy(script: str, display: str, tmp_path: Path) -> dict:
    env = {**os.environ, "DISPLAY": display, "KIVY_NO_ARGS": "1", "KIVY_NO_CONSOLELOG": "1",
           "KIVY_HOME": str(tmp_path / "kivy"), "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=120, cwd=REPO)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


def test_kivy_translator_updates_bound_labels_on_switch_lang(virtual_display: str,
                                                              tmp_path: Path) -> None:
    out = run_kivy(KIVY_TRANSLATOR_CHECK, virtual_display, tmp_path)
    assert out["same"]
    assert out["en"] == ["Share your story", "en", "Not in any catalogue"]
    assert out["fr"] == ["Partagez votre histoire", "fr", "Not in any catalogue"]
    assert out["ar"] == ["شارك قصتك", "ar", "Not in any catalogue"]
    assert out["observers"] == 3
    assert out["with_extra"] == 4
    assert out["extra_es"] == "Escuchar historias"
    assert out["after_unbind"] == 3
    # A collected widget's rule is dropped at the next switch instead of failing it.
    assert out["after_gc_switch"] == 3
    assert out["back_en"] == out["en"]
