"""Opening PortAudio devices by the names the config gives, with errors staff can act on."""

from __future__ import annotations

from types import ModuleType


class AudioDeviceError(Exception):
    """No usable device: the message is one sentence meant for the person at the kiosk."""


def load_sounddevice() -> ModuleType:
    """Import sounddevice, turning a missing PortAudio library into a clear error."""
    try:
        import sounddevice
    except OSError:
        raise AudioDeviceError(
            "The audio system is not available: the PortAudio library (libportaudio2)"
            " is not installed.") from None
    return sounddevice


def resolve(sd: ModuleType, device: str | int | None, kind: str) -> int:
    """Return the PortAudio index of the configured ``kind`` ("input"/"output") device."""
    what = "microphone" if kind == "input" else "speaker"
    try:
        info = sd.query_devices(device, kind)
    except (ValueError, sd.PortAudioError):
        if device is None:
            raise AudioDeviceError(
                f"No {what} was found: connect one, or name it in the [audio] section"
                " of the config.") from None
        raise AudioDeviceError(
            f"The {what} {device!r} named in the config was not found: check that it is"
            " connected, or correct the [audio] section of the config.") from None
    channels = info["max_input_channels" if kind == "input" else "max_output_channels"]
    if channels < 1:
        raise AudioDeviceError(f"The device {info['name']!r} cannot be used as a {what}.")
    return int(info["index"])
