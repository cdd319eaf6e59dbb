"""The Opus encoder's bitrate, set through the only knob soundfile passes on.

soundfile 0.14 with its bundled libsndfile 1.2.2 has no bitrate setting for Opus, and
its ``bitrate_mode`` is refused for Ogg/Opus ("Error set bitrate mode"). What it does
pass is ``compression_level``: libsndfile's ``ogg_opus.c`` maps level 0.0 to 256 kbit/s
per channel and level 1.0 to 6 kbit/s, linearly, and hands the result to
``OPUS_SET_BITRATE`` (VBR, so quiet passages take less). Without a level libsndfile's
default is about 61 kbit/s for mono speech; speech in Opus is clear at 32 kbit/s, which
halves the bytes a venue's slow link has to carry.

Opus's VBR overshoots its target on dense speech: asked for 32 kbit/s, it gave 34.5
kbit/s on continuous espeak-ng speech (258 kB a minute); asked for 28, it gave about 30
(about 230 kB a minute, under the 240 kB a minute the sync budget allows). So the
kiosk asks for 28 and gets "about 32".
"""

from __future__ import annotations

#: libsndfile's Opus bitrate range for one channel, in kbit/s (level 0.0 and 1.0).
MAX_KBPS = 256.0
MIN_KBPS = 6.0
#: What the kiosk records speech at unless the config says otherwise.
DEFAULT_KBPS = 28.0


def compression_level_for(kbps: float) -> float:
    """The ``compression_level`` that asks libsndfile's Opus encoder for ``kbps`` (mono)."""
    if not MIN_KBPS <= kbps <= MAX_KBPS:
        raise ValueError(f"Opus bitrate must be between {MIN_KBPS:g} and {MAX_KBPS:g}"
                         f" kbit/s, got {kbps:g}")
    return (MAX_KBPS - kbps) / (MAX_KBPS - MIN_KBPS)
