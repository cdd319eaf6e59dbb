"""A private PulseAudio daemon with two null sinks: ``mic`` and ``speakers``.

The kiosk records from the monitor of ``mic`` (the default source) and plays to
``speakers`` (the default sink); tests play speech into ``mic`` and record the monitor
of ``speakers``. Each test session gets its own runtime directory, so parallel runs
(and the machine's own daemon, if any) never share a server.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

RATE = 48_000


class VirtualAudio:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="kiosk-pulse-"))
        self.runtime = self.dir / "pulse"
        self.env = {
            "PULSE_RUNTIME_PATH": str(self.runtime),
            "PULSE_SERVER": f"unix:{self.runtime / 'native'}",
            # The daemon keeps its cookie and state under HOME; keep them private too.
            "PULSE_STATE_PATH": str(self.dir / "state"),
            "PULSE_COOKIE": str(self.dir / "cookie"),
        }
        self._players: list[subprocess.Popen[bytes]] = []

    def full_env(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def _pactl(self, *args: str) -> str:
        return subprocess.run(["pactl", *args], env=self.full_env(), check=True,
                              capture_output=True, text=True, timeout=10).stdout

    def start(self) -> None:
        for tool in ("pulseaudio", "pactl", "paplay", "parec"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} is missing: run deploy/setup.sh")
        self.runtime.mkdir(parents=True)
        subprocess.run(
            ["pulseaudio", "--daemonize=yes", "--exit-idle-time=-1", "-n",
             "--use-pid-file=yes", "--disallow-exit=no", "--log-target=stderr",
             "--load=module-native-protocol-unix",
             f"--load=module-null-sink sink_name=mic rate={RATE} channels=1",
             f"--load=module-null-sink sink_name=speakers rate={RATE} channels=2"],
            env=self.full_env(), check=True, capture_output=True, timeout=20)
        deadline = time.monotonic() + 10
        while True:
            try:
                self._pactl("info")
                break
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self._pactl("set-default-source", "mic.monitor")
        self._pactl("set-default-sink", "speakers")

    def stop(self) -> None:
        for player in self._players:
            if player.poll() is None:
                player.kill()
            player.wait()
        pid = self._daemon_pid()
        subprocess.run(["pulseaudio", "--kill"], env=self.full_env(), capture_output=True,
                       timeout=10)
        if pid is not None:
            deadline = time.monotonic() + 10
            while process_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _daemon_pid(self) -> int | None:
        try:
            return int((self.runtime / "pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    # -- the fixtures' two halves ------------------------------------------------------
    def play_into_mic(self, wav: Path) -> subprocess.Popen[bytes]:
        """Start playing ``wav`` into the microphone in real time; returns the player."""
        player = subprocess.Popen(["paplay", "--device=mic", str(wav)], env=self.full_env(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._players.append(player)
        return player

    def record_speakers(self) -> SpeakerRecording:
        """Start recording what is played to the speakers (mono, 48 kHz, int16)."""
        return SpeakerRecording(self)


class SpeakerRecording:
    """A running ``parec`` on ``speakers.monitor``; ``stop()`` returns the samples.

    parec writes a WAV file and is stopped with SIGINT, on which it flushes and closes
    the file; killing a raw parec loses whatever it had buffered.
    """

    def __init__(self, audio: VirtualAudio) -> None:
        self._audio = audio
        fd, name = tempfile.mkstemp(suffix=".wav", dir=audio.dir)
        os.close(fd)
        self._path = Path(name)
        before = self._source_outputs()
        self._proc = subprocess.Popen(
            ["parec", "--device=speakers.monitor", "--format=s16le", f"--rate={RATE}",
             "--channels=1", "--file-format=wav", "--latency-msec=20", str(self._path)],
            env=audio.full_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Return only once the recording stream is connected, so nothing played after
        # this call is missed.
        deadline = time.monotonic() + 10
        while self._source_outputs() <= before:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("parec did not start recording the speakers")
            time.sleep(0.05)

    def _source_outputs(self) -> int:
        listing = self._audio._pactl("list", "short", "source-outputs")
        return len(listing.splitlines())

    def stop(self) -> np.ndarray:
        self._proc.send_signal(signal.SIGINT)
        self._proc.wait(10)
        samples, _ = read_wav(self._path)
        self._path.unlink()
        return samples


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its parent counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono int16 samples and the rate of a PCM WAV file."""
    with wave.open(str(path), "rb") as w:
        frames = w.readframes(w.getnframes())
        samples = np.frombuffer(frames, dtype=np.int16)
        if w.getnchannels() > 1:
            samples = samples.reshape(-1, w.getnchannels())[:, 0]
        return samples, w.getframerate()
