"""The kiosk's words in four languages: gettext catalogues with English sentences as ids.

A msgid is the English sentence itself, so a string nobody has translated yet shows in
English, never as a raw id. The catalogues live in ``assets/locale/<code>/LC_MESSAGES/
kiosk.po`` (the source) and are compiled to ``kiosk.mo`` by ``deploy/setup.sh``; where a
``.mo`` is missing or older than its ``.po`` (a fresh clone, a translator's edit), the
``.po`` is compiled in memory instead, so what shows is always what the ``.po`` says.

Translation stays pure: Arabic comes back in logical order, unshaped. Making it
displayable (shaping, wrapping, bidi reordering per line) is :mod:`kiosk.textlayout`'s
job, done where the width of the label is known.

Three ways in:

- :class:`Translator`: plain Python, no Kivy (the session state machine, tests).
- :func:`kivy_translator`: the same, as a Kivy ``Observable`` that kv rules bind to.
  It is installed in kv's global names as ``tr``, so a kv file writes
  ``text: tr._("Share your story")`` and the text follows ``tr.switch_lang(code)``.
- :func:`N_`: marks a sentence defined in Python data for extraction; it is translated
  later, where it is shown (see :data:`MESSAGES`).

To add strings: wrap them (``_``/``tr._`` in code and kv, ``N_`` in data), then run
``.venv/bin/python deploy/extract_messages.py`` and translate what it reports.
"""

from __future__ import annotations

import functools
import gettext as _gettext
import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("kiosk.i18n")

#: The languages the kiosk offers, in the order the language choice shows them.
LANGUAGES: tuple[str, ...] = ("en", "es", "fr", "ar")
#: Languages written right to left.
RTL: frozenset[str] = frozenset({"ar"})
#: The language the msgids are written in, and the kiosk's default.
SOURCE_LANGUAGE = "en"
DOMAIN = "kiosk"
LOCALE_DIR: Path = Path(__file__).resolve().parent.parent / "assets" / "locale"
#: Each language's name in itself, for the language choice.
LANGUAGE_NAMES: dict[str, str] = {
    "en": "English",
    "es": "Español",
    "fr": "Français",
    "ar": "العربية",
}


def N_(msgid: str) -> str:  # noqa: N802 (gettext's conventional name)
    """Mark ``msgid`` for extraction without translating it now; returns it unchanged."""
    return msgid


#: What the session state machine and the recorder tell the person, by message id.
#: The values are msgids: show ``Translator.message(id)``. The recorder's sentences are
#: the same as in :mod:`kiosk.audio.take`, so its English and these ids agree.
MESSAGES: dict[str, str] = {
    "consent_required": N_("Please answer each question above. To record, we need your"
                           " agreement to publish your voice."),
    "name_required": N_("Please write the name you want to be shown, or choose"
                        " \u201cAnonymous\u201d."),
    "answer_required": N_("Please record at least one answer before you submit."),
    "silent": N_("We could not hear you. Please speak close to the microphone and record"
                 " this answer again."),
    "max_length": N_("You reached the time limit for this answer. Everything you said"
                     " has been kept."),
    "device_lost": N_("The microphone stopped working. What you said up to that moment"
                      " has been kept. Please ask staff for help."),
    "disk_full": N_("The kiosk ran out of storage space. What you said up to that moment"
                    " has been kept. Please ask staff for help."),
    "write_failed": N_("The kiosk had a problem saving this answer. What you said up to"
                       " that moment has been kept. Please ask staff for help."),
    "no_microphone": N_("The kiosk cannot find its microphone, so it cannot record now."
                        " Please ask staff for help."),
    "submit_failed": N_("Your story could not be saved. Nothing has been sent. Please try"
                        " again, or ask staff for help."),
    # The recorder's other sentences (kiosk.audio.take), so that each has an id too.
    "no_audio": N_("The microphone stopped working before anything was recorded. Please"
                   " ask staff for help."),
    "not_kept": N_("This answer could not be saved. Please ask staff for help."),
    "storage_full": N_("The kiosk's storage is full, so it cannot record now. Please ask"
                       " staff for help."),
    "cannot_record": N_("The kiosk could not start recording. Please ask staff for help."),
    # The session's own words around a submission.
    "idle_warning": N_("Are you still there? Touch the screen to continue. Otherwise this"
                       " session will end soon, and what you recorded will be deleted."),
    # TRANSLATORS: {code} is the receipt code (letters and digits); keep it as it is.
    "submitted": N_("Thank you. Your story has been received. Your receipt code is"
                    " {code}. Keep it if you want to ask about your story or withdraw it"
                    " later."),
}


def _catalogue_paths(code: str) -> tuple[Path, Path]:
    folder = LOCALE_DIR / code / "LC_MESSAGES"
    return folder / f"{DOMAIN}.mo", folder / f"{DOMAIN}.po"


def _compile_po(po_path: Path) -> _gettext.GNUTranslations:
    # Babel is a dependency of the kiosk (it also names the countries); imported here
    # because only a stale or missing .mo needs it.
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    with po_path.open("rb") as f:
        catalog = read_po(f)
    buf = io.BytesIO()
    write_mo(buf, catalog, use_fuzzy=False)
    buf.seek(0)
    return _gettext.GNUTranslations(buf)


@functools.cache
def translation(code: str) -> _gettext.NullTranslations:
    """The catalogue for language ``code``; English (the msgids) where there is none.

    Cached per code: call :func:`clear_cache` after changing a catalogue at run time.
    """
    mo_path, po_path = _catalogue_paths(code)
    try:
        mo_fresh = mo_path.is_file() and (
            not po_path.is_file() or mo_path.stat().st_mtime >= po_path.stat().st_mtime)
        if mo_fresh:
            # Opened directly: gettext.translation() keeps its own cache of .mo files,
            # which clear_cache() could not reach.
            with mo_path.open("rb") as f:
                return _gettext.GNUTranslations(f)
        if po_path.is_file():
            log.info("catalogue_compiled_in_memory language=%s", code)
            return _compile_po(po_path)
    except Exception as exc:  # a broken catalogue must not stop the kiosk: show English
        log.warning("catalogue_unreadable language=%s error=%s", code, type(exc).__name__)
    return _gettext.NullTranslations()


def clear_cache() -> None:
    """Forget the loaded catalogues (after a catalogue changed on disk)."""
    translation.cache_clear()


def is_rtl(code: str) -> bool:
    return code in RTL


class Translator:
    """The current language and its catalogue. No Kivy; cheap to make.

    ``gettext`` (alias ``_``) of a msgid missing from the catalogue returns the msgid,
    that is the English sentence.
    """

    def __init__(self, language: str = SOURCE_LANGUAGE) -> None:
        self.language = SOURCE_LANGUAGE
        self._catalogue = translation(SOURCE_LANGUAGE)
        self.set_language(language)

    def set_language(self, code: str) -> None:
        """Switch to ``code``, one of :data:`LANGUAGES` (``ValueError`` otherwise)."""
        if code not in LANGUAGES:
            raise ValueError(f"unknown language {code!r}; expected one of {LANGUAGES}")
        self._catalogue = translation(code)
        self.language = code

    @property
    def is_rtl(self) -> bool:
        return is_rtl(self.language)

    def gettext(self, msgid: str) -> str:
        if not msgid:
            return msgid  # gettext("") would return the catalogue's header
        return self._catalogue.gettext(msgid)

    _ = gettext

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return self._catalogue.ngettext(singular, plural, n)

    def pgettext(self, context: str, msgid: str) -> str:
        if not msgid:
            return msgid
        return self._catalogue.pgettext(context, msgid)

    def message(self, message_id: str, /, **fields: object) -> str:
        """The sentence :data:`MESSAGES` names ``message_id``, translated and formatted."""
        text = self.gettext(MESSAGES[message_id])
        return text.format(**fields) if fields else text


#: Names a kv rule may bind to on the Kivy translator; every one of them is refreshed
#: when the language changes.
_OBSERVED_NAMES = frozenset({"_", "gettext", "ngettext", "pgettext", "message",
                             "language", "is_rtl"})


@functools.cache
def _kivy_translator_class() -> type[Any]:
    from kivy.event import Observable

    class KivyTranslator(Observable):  # type: ignore[misc]
        """A :class:`Translator` that kv rules bind to: ``text: tr._("...")``.

        Kivy's kv compiler binds a rule that reads ``tr._`` with ``tr.fbind("_", ...)``;
        these bindings are kept here and called again by :meth:`switch_lang`, so every
        rule that reads ``tr._``, ``tr.language`` or ``tr.is_rtl`` is re-evaluated.
        """

        def __init__(self, language: str = SOURCE_LANGUAGE) -> None:
            super().__init__()
            self.translator = Translator(language)
            self._observers: dict[int, tuple[str, Callable[..., Any], tuple[Any, ...],
                                             dict[str, Any]]] = {}
            self._next_uid = 1

        # -- translation ----------------------------------------------------------
        @property
        def language(self) -> str:
            return self.translator.language

        @property
        def is_rtl(self) -> bool:
            return self.translator.is_rtl

        def _(self, msgid: str) -> str:
            return self.translator.gettext(msgid)

        def gettext(self, msgid: str) -> str:
            return self.translator.gettext(msgid)

        def ngettext(self, singular: str, plural: str, n: int) -> str:
            return self.translator.ngettext(singular, plural, n)

        def pgettext(self, context: str, msgid: str) -> str:
            return self.translator.pgettext(context, msgid)

        def message(self, message_id: str, /, **fields: object) -> str:
            return self.translator.message(message_id, **fields)

        def switch_lang(self, code: str) -> None:
            """Change the language and re-evaluate every kv rule bound to this object."""
            self.translator.set_language(code)
            for uid, (_name, func, largs, kwargs) in list(self._observers.items()):
                try:
                    # Kivy calls a bound callback as func(*largs, instance, value).
                    func(*largs, self, code, **kwargs)
                except ReferenceError:
                    # The widget whose rule this was is gone.
                    self._observers.pop(uid, None)

        @property
        def observer_count(self) -> int:
            return len(self._observers)

        # -- Kivy's binding protocol, as the kv compiler uses it ---------------------
        def fbind(self, name: str, func: Callable[..., Any], *largs: Any,
                  **kwargs: Any) -> int:
            if name not in _OBSERVED_NAMES:
                return super().fbind(name, func, *largs, **kwargs)
            uid = self._next_uid
            self._next_uid += 1
            self._observers[uid] = (name, func, largs, kwargs)
            return uid

        def funbind(self, name: str, func: Callable[..., Any], *largs: Any,
                    **kwargs: Any) -> None:
            if name not in _OBSERVED_NAMES:
                return super().funbind(name, func, *largs, **kwargs)
            for uid, entry in list(self._observers.items()):
                if entry == (name, func, largs, kwargs):
                    del self._observers[uid]
                    return

        def unbind_uid(self, name: str, uid: int) -> None:
            if name not in _OBSERVED_NAMES:
                return super().unbind_uid(name, uid)
            self._observers.pop(uid, None)

        # Last in the class body: from here on, ``property`` names this method.
        def property(self, name: str, quiet: bool = False) -> None:
            """No Kivy properties here; the kv compiler asks when it walks ``tr.x.y``."""
            if not quiet:
                raise KeyError(name)
            return None

    return KivyTranslator


_kivy_translator: Any = None


def kivy_translator(language: str = SOURCE_LANGUAGE) -> Any:
    """The app's one Kivy translator, made on first call and installed in kv as ``tr``.

    Imports Kivy, so call it after Kivy's environment is prepared and before loading
    any kv file that uses ``tr``. ``language`` applies only to the first call.
    """
    global _kivy_translator
    if _kivy_translator is None:
        from kivy.lang import global_idmap

        _kivy_translator = _kivy_translator_class()(language)
        global_idmap["tr"] = _kivy_translator
    return _kivy_translator


# -- extraction of kv files, for pybabel (see assets/babel.cfg) -----------------------------

#: kv properties whose plain string value is text a person reads. Such a literal is
#: extracted too, with a comment, so that its translation is ready (and kept) before
#: the kv rule is changed to ``tr._(...)``.
_LITERAL_TEXT_KEYS = ("text", "source_text", "hint_text")
UNWRAPPED_COMMENT = "kv literal, not yet wrapped in tr._()"


def extract_kv(fileobj: Any, keywords: Any, comment_tags: Any,
               options: dict[str, Any]) -> Any:
    """A Babel extraction method for Kivy ``.kv`` files.

    Each kv line is reduced to its Python expression (what follows ``name:``), so that
    Babel's Python extractor finds the ``tr._("...")`` calls, also across lines; and a
    text property whose value is a bare string literal is extracted as well.
    """
    import ast
    import re

    from babel.messages.extract import extract_python

    encoding = options.get("encoding", "utf-8")
    source = fileobj.read().decode(encoding)
    key_line = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*:(.*)$")
    python_lines: list[str] = []
    literals: list[tuple[int, str]] = []
    for lineno, line in enumerate(source.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("<"):
            python_lines.append("")
            continue
        match = key_line.match(line)
        expression = match.group(2).strip() if match else stripped
        python_lines.append(expression)
        if (match and match.group(1) in _LITERAL_TEXT_KEYS and expression
                and expression[0] in "'\""):
            try:
                value = ast.literal_eval(expression)
            except (ValueError, SyntaxError):
                continue
            if isinstance(value, str) and any(ch.isalpha() for ch in value):
                literals.append((lineno, value))
    code = io.BytesIO("\n".join(python_lines).encode("utf-8"))
    yield from extract_python(code, keywords, comment_tags, {"encoding": "utf-8"})
    for lineno, value in literals:
        yield lineno, None, value, [UNWRAPPED_COMMENT]
