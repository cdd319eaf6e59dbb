"""Speech samples made at test time with espeak-ng (no audio files are committed)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

RATE = 48_000


@dataclass(frozen=True)
class Voice:
    espeak_voice: str
    text: str


#: Several voices and languages, as the exhibit hears them.
VOICES = {
    "en": Voice("en+m3", "My name does not matter. I defend the right of my neighbours to"
                         " clean water, and I do it peacefully, every single day."),
    "es": Voice("es+f3", "Defiendo el derecho de mi comunidad a la tierra. Lo hago en paz,"
                         " con mis vecinas, todos los días."),
    "fr": Voice("fr+m1", "Je défends la liberté de la presse dans ma ville. C'est un travail"
                         " pacifique et essentiel."),
    "ar": Voice("ar", "أدافع عن حقوق العمال في مدينتي بطريقة سلمية كل يوم"),
}


def make_speech(out: Path, language: str = "en", *, repeat: int = 1,
                gap_ms: int = 0) -> Path:
    """Write ``VOICES[language]`` spoken ``repeat`` times to ``out`` as 48 kHz mono WAV."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is missing: run deploy/setup.sh")
    voice = VOICES[language]
    raw = out.with_suffix(".espeak.wav")
    text = " ".join([voice.text] * repeat)
    subprocess.run(["espeak-ng", "-v", voice.espeak_voice, "-s", "165", "-g", str(gap_ms // 10),
                    "-w", str(raw), text], check=True, capture_output=True, timeout=60)
    # espeak-ng speaks at 22.05 kHz; the kiosk records at 48 kHz.
    subprocess.run(["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(out)],
                   check=True, capture_output=True, timeout=60)
    raw.unlink()
    return out
