"""Recorder benchmark: a long take from the virtual microphone on a kiosk under load.

    .venv/bin/python tests/bench/recorder.py [--minutes N] [--short-takes K] [--json PATH]

While a take of N minutes (default 10) records continuous espeak-ng speech from the
PulseAudio virtual microphone, a busy loop runs on every core and another process
seals 200 MB with the envelope writer, again and again. Then K short takes (default
30) measure start-to-first-block and stop-to-sealed latency under the same load.

Targets (issue 4): zero input overflows; recorder CPU <= 10 % of one core; RSS growth
<= 20 MB over the take; stop-to-sealed p95 <= 100 ms; start-to-first-block p95 <=
150 ms; sealed bytes per minute of speech <= 240,000 (issue 8). Also reported: the
Opus bitrate.

The microphone is armed once, as the recording screen does when it opens; the time
that first stream took to deliver is reported as ``cold_first_block_ms``. Each take's
start-to-first-block is then the time from ``start()`` to its first block.

"Recorder CPU" is the CPU time of this whole process (PortAudio's thread, the writer
thread, and a main thread that reads the meters 30 times a second as the screen would)
divided by the wall time of the take; the load runs in other processes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from kiosk.audio.recorder import Recorder  # noqa: E402
from kiosk.audio.streams import SoundDeviceStreams  # noqa: E402
from kiosk.vault.ballast import Ballast  # noqa: E402
from sync.envelope import X25519Identity  # noqa: E402
from tests.harness.pulse import VirtualAudio  # noqa: E402
from tests.harness.speech import make_speech  # noqa: E402

TARGETS = {
    "input_overflows": ("==", 0),
    "recorder_cpu_percent_of_one_core": ("<=", 10.0),
    "rss_growth_mb": ("<=", 20.0),
    "stop_to_sealed_p95_ms": ("<=", 100.0),
    "start_to_first_block_p95_ms": ("<=", 150.0),
    # Issue 8: speech at about 32 kbit/s, half of libsndfile's default 61 kbit/s.
    "sealed_bytes_per_minute": ("<=", 240_000),
}

ENCRYPT_LOOP = """
import os, sys, time
sys.path.insert(0, sys.argv[2])
from sync.envelope import EnvelopeWriter, X25519Identity
out = sys.argv[1]
recipient = X25519Identity.generate().recipient()
block = os.urandom(1 << 20)
while True:
    began = time.monotonic()
    writer = EnvelopeWriter(out, [recipient])
    for _ in range(200):
        writer.write(block)
    writer.close()
    os.unlink(out)
    print(f"{time.monotonic() - began:.3f}", flush=True)
"""


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def p95(values: list[float]) -> float:
    return float(np.percentile(values, 95)) if values else float("nan")


class SpeechLoop:
    """Plays the speech into the microphone over and over until stopped."""

    def __init__(self, audio: VirtualAudio, wav: Path) -> None:
        self.audio, self.wav = audio, wav
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._player: subprocess.Popen[bytes] | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._player = self.audio.play_into_mic(self.wav)
            self._player.wait()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._player is not None:
            self._player.kill()
        self._thread.join(5)


class Load:
    """A busy loop per core, and a process sealing 200 MB again and again."""

    def __init__(self, scratch: Path, *, busy: int, encrypt: bool) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        for _ in range(busy):
            self.procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        self.encrypt: subprocess.Popen[str] | None = None
        self.pass_seconds: list[float] = []
        if encrypt:
            self.encrypt = subprocess.Popen(
                [sys.executable, "-c", ENCRYPT_LOOP, str(scratch / "load.age"), str(REPO)],
                stdout=subprocess.PIPE, text=True)
            self.procs.append(self.encrypt)
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.encrypt is not None and self.encrypt.stdout is not None
        for line in self.encrypt.stdout:
            self.pass_seconds.append(float(line))

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


def long_take(recorder: Recorder, folder: Path, recipient: object, seconds: float) -> dict:
    take = recorder.start(folder / "long.age", [recipient])
    time.sleep(1.0)  # RSS baseline once the stream, encoder and writer are all running
    cpu0, wall0, rss0 = cpu_s(), time.monotonic(), rss_mb()
    rss_max = rss0
    deadline = wall0 + seconds - 1.0
    next_rss = wall0 + 1.0
    while time.monotonic() < deadline:
        take.meters()  # the screen redraws the meters at 30 Hz
        time.sleep(1 / 30)
        if time.monotonic() >= next_rss:
            rss_max = max(rss_max, rss_mb())
            next_rss += 1.0
    cpu1, wall1 = cpu_s(), time.monotonic()
    result = take.stop()
    rss_end = rss_mb()
    assert result.sealed is not None, result.reason
    return {
        "result": result,
        "cpu_percent": 100 * (cpu1 - cpu0) / (wall1 - wall0),
        "rss_start_mb": rss0, "rss_max_mb": max(rss_max, rss_end), "rss_end_mb": rss_end,
    }


def short_takes(recorder: Recorder, folder: Path, recipient: object, count: int) -> dict:
    first, seal, stop_wall, overflows = [], [], [], 0
    for i in range(count):
        take = recorder.start(folder / f"short-{i}.age", [recipient])
        time.sleep(1.0)
        began = time.monotonic()
        result = take.stop()
        stop_wall.append(time.monotonic() - began)
        assert result.sealed is not None, result.reason
        if result.first_block_latency_s is not None:
            first.append(result.first_block_latency_s)
        seal.append(result.seal_latency_s)
        overflows += result.overflows
        Path(result.sealed.path).unlink()
    return {"first": first, "seal": seal, "stop_wall": stop_wall, "overflows": overflows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the long take")
    parser.add_argument("--short-takes", type=int, default=30,
                        help="short takes for the latency figures (default 30)")
    parser.add_argument("--json", type=Path, help="write the figures as JSON to PATH")
    parser.add_argument("--no-load", action="store_true", help="run on an idle machine")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="kiosk-bench-"))
    audio = VirtualAudio()
    audio.start()
    os.environ.update(audio.env)
    speech = SpeechLoop(audio, make_speech(work / "speech.wav", "en", repeat=6))
    load: Load | None = None
    recorder: Recorder | None = None
    try:
        data_dir = work / "data"
        folder = data_dir / "outbox" / "bench"
        folder.mkdir(parents=True)
        team = X25519Identity.generate()
        recorder = Recorder(SoundDeviceStreams(), ballast=Ballast(data_dir),
                            max_answer_s=args.minutes * 60 + 60)
        cold = recorder.warm_up()
        speech.start()
        if not args.no_load:
            load = Load(work, busy=os.cpu_count() or 2, encrypt=True)
        time.sleep(1.0)
        long = long_take(recorder, folder, team.recipient(), args.minutes * 60)
        short = short_takes(recorder, folder, team.recipient(), args.short_takes)
        result = long["result"]
        minutes = result.duration_s / 60
        seal_all = short["seal"] + [result.seal_latency_s]
        first_all = short["first"] + [result.first_block_latency_s]
        figures = {
            "minutes": round(minutes, 3),
            "input_overflows": result.overflows + short["overflows"],
            "recorder_cpu_percent_of_one_core": round(long["cpu_percent"], 2),
            "rss_start_mb": round(long["rss_start_mb"], 1),
            "rss_max_mb": round(long["rss_max_mb"], 1),
            "rss_growth_mb": round(long["rss_max_mb"] - long["rss_start_mb"], 1),
            "stop_to_sealed_p95_ms": round(1000 * p95(seal_all), 1),
            "stop_to_sealed_max_ms": round(1000 * max(seal_all), 1),
            "stop_call_p95_ms": round(1000 * p95(short["stop_wall"]), 1),
            "start_to_first_block_p95_ms": round(1000 * p95(first_all), 1),
            "start_to_first_block_max_ms": round(1000 * max(first_all), 1),
            "cold_first_block_ms": round(1000 * cold, 1) if cold is not None else None,
            "short_takes": len(short["seal"]),
            "opus_kbit_per_s": round(result.opus_bytes * 8 / result.duration_s / 1000, 1),
            "sealed_bytes_per_minute": round(result.sealed.size / minutes),
            "opus_bytes_per_minute": round(result.opus_bytes / minutes),
            "load": "none" if args.no_load else
                    f"{os.cpu_count()} busy loops + 200 MB envelope encryption in a loop",
            "encryption_passes_200mb": len(load.pass_seconds) if load else 0,
            "encryption_pass_s_median": (round(float(np.median(load.pass_seconds)), 2)
                                         if load and load.pass_seconds else None),
        }
    finally:
        if recorder is not None:
            recorder.close()
        if load is not None:
            load.stop()
        speech.stop()
        audio.stop()
        shutil.rmtree(work, ignore_errors=True)

    failed = []
    print(f"Recorder benchmark: {figures['minutes']:.2f} min take, {figures['short_takes']}"
          f" short takes, load: {figures['load']}")
    print(f"{'figure':<36} {'measured':>12} {'target':>10}  ok")
    for key, value in figures.items():
        if key in ("load", "minutes"):
            continue
        target = TARGETS.get(key)
        mark = ""
        if target is not None:
            op, limit = target
            ok = value == limit if op == "==" else value <= limit
            mark = "yes" if ok else "NO"
            if not ok:
                failed.append(key)
        shown = f"{op} {limit}" if target else ""
        print(f"{key:<36} {value!s:>12} {shown:>10}  {mark}")
    figures["targets_failed"] = failed
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
