"""Benchmark of publishing a story's audio (issue 12): time against the story's length.

Run:  .venv/bin/python tests/bench/publish.py [--quick] [--json PATH]
                                              [--with-upload URL --token idrvet_...]

A 10-minute story (``--quick``: 1 minute) of espeak-ng speech, in five answers encoded
as the kiosk encodes a take (Ogg/Opus, 48 kHz mono, ~28 kbit/s), goes through
``sync.vet.audio.prepare_story_audio`` (decode, join, normalise to -16 LUFS with the
-1 dBTP true-peak limit, encode Opus, decode and measure the result), then its SHA-256,
a catalog holding it built and signed with an Ed25519 publishing key, and, with
``--with-upload``, ``PUT /api/v1/stories/<id>.ogg`` to a running service. Twice, side by
side in one run: without voice disguise and with it (WORLD, +4 semitones).

The figure is the speed factor: story duration / wall time of the whole publish
(targets: >= 20x real time without disguise, >= 5x with it). CPU time is shown too:
the machine is shared (2 cores; other sessions' tests may be running), so the table
also prints the load average at the start and end of each run. The disguise uses a
thread per core; everything else runs on one.

``publish_story`` is the one place the steps are timed: the lead's vet tool adds its
own steps (upload of the catalog) there.

Then the kiosk side (tests/bench/catalog_bench.py): a real ``central serve`` on loopback
holding 200 published stories (``--quick``: 50) of Ogg/Opus, 20-60 s each, and a
freshly enrolled kiosk. Its first ``sync_once`` fetches the catalog and every story
(time, MB/s, requests, bytes received, through a counting httpx transport); a second
pass with nothing new must cost a single ``GET /catalog`` answered 304 (the heartbeat
each pass sends is counted apart). Skip it with ``--no-catalog-sync``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from sync import catalog  # noqa: E402
from sync.envelope import X25519Identity  # noqa: E402
from sync.signing import SigningKey  # noqa: E402
from sync.vet import audio  # noqa: E402
from tests.bench.catalog_bench import catalog_sync_runs  # noqa: E402
from tests.harness.speech import make_speech  # noqa: E402

RATE = 48_000
KIOSK_KBPS = 28.0
PARTS = 5
TARGETS = {"plain": 20.0, "disguise": 5.0}


def kiosk_encode(samples: np.ndarray) -> bytes:
    """Ogg/Opus bytes as kiosk/audio/take.py writes a take."""
    out = io.BytesIO()
    with sf.SoundFile(out, mode="w", samplerate=RATE, channels=1, format="OGG",
                      subtype="OPUS",
                      compression_level=audio.compression_level_for(KIOSK_KBPS)) as f:
        f.write(samples.astype(np.float32))
    return out.getvalue()


def story_parts(seconds: float, work: Path) -> list[bytes]:
    """``PARTS`` answers of speech, ``seconds`` in all: several voices, tiled."""
    voices = []
    for language in ("en", "es", "fr"):
        samples, rate = sf.read(make_speech(work / f"{language}.wav", language, repeat=3,
                                            gap_ms=300), dtype="float32")
        assert rate == RATE
        voices.append(samples)
    speech = np.concatenate(voices)
    total = int(seconds * RATE) - (PARTS - 1) * int(audio.PAUSE_S * RATE)
    speech = np.tile(speech, -(-total // speech.shape[0]))[:total]
    return [kiosk_encode(chunk) for chunk in np.array_split(speech, PARTS)]


Step = Callable[[dict[str, Any]], None]


def upload_step(url: str, token: str) -> Step:
    """PUT the story's audio to the service (the public audio endpoint of issue 12)."""
    import httpx

    def step(state: dict[str, Any]) -> None:
        response = httpx.put(f"{url.rstrip('/')}/api/v1/stories/{state['story_id']}.ogg",
                             content=state["ogg"], timeout=60,
                             headers={"Authorization": f"Bearer {token}",
                                      "Content-Type": "audio/ogg",
                                      "X-Content-SHA256": state["sha256"]})
        response.raise_for_status()

    return step


def publish_story(parts: list[bytes], *, disguise: bool, key: SigningKey,
                  extra_steps: dict[str, Step] | None = None) -> dict[str, Any]:
    """One publish, timed by step; returns the figures."""
    load_before = os.getloadavg()[0]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    stages: dict[str, float] = {}
    prepared = audio.prepare_story_audio(parts, disguise=disguise, timings=stages)
    encodings = int(stages.pop("encodings"))
    state: dict[str, Any] = {"ogg": prepared.ogg_bytes, "story_id": f"bench-{os.getpid()}"
                             f"-{'d' if disguise else 'p'}"}

    began = time.perf_counter()
    state["sha256"] = hashlib.sha256(prepared.ogg_bytes).hexdigest()
    stages["sha256"] = time.perf_counter() - began

    began = time.perf_counter()
    story = catalog.Story(
        id=state["story_id"], title="Benchmark story", display_name="Anonymous",
        country="XK", region="Benchmark", themes=("water",), language="en",
        duration_s=round(prepared.duration_s, 3), transcript="Benchmark.",
        size=len(prepared.ogg_bytes),
        audio_sha256=state["sha256"], url=f"stories/{state['story_id']}.ogg")
    data = catalog.build(catalog.Catalog(
        version=1, issued_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        recipients=(str(X25519Identity.generate().recipient()),), prompts=("q1",),
        stories=(story,)))
    state["catalog"], state["signature"] = data, catalog.sign(data, key)
    stages["catalog_sign"] = time.perf_counter() - began

    for name, step in (extra_steps or {}).items():
        began = time.perf_counter()
        step(state)
        stages[name] = time.perf_counter() - began

    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    return {
        "disguise": disguise,
        "duration_s": round(prepared.duration_s, 3),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "speed_x_real_time": round(prepared.duration_s / wall, 2),
        "cpu_speed_x_real_time": round(prepared.duration_s / cpu, 2),
        "encodings": encodings,
        "stages_s": {name: round(value, 3) for name, value in stages.items()},
        "lufs": round(prepared.lufs, 2),
        "true_peak_dbtp": round(prepared.true_peak_dbtp, 2),
        "bytes": len(prepared.ogg_bytes),
        "kbit_per_s": round(len(prepared.ogg_bytes) * 8 / prepared.duration_s / 1000, 1),
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 1-minute story")
    parser.add_argument("--json", type=Path, help="write the figures as JSON to PATH")
    parser.add_argument("--with-upload", metavar="URL",
                        help="also PUT the audio to the service at URL (needs --token)")
    parser.add_argument("--token", help="a vetter token for --with-upload")
    parser.add_argument("--no-catalog-sync", action="store_true",
                        help="skip the kiosk catalog sync measurements")
    args = parser.parse_args(argv)
    if args.with_upload and not args.token:
        parser.error("--with-upload needs --token")

    seconds = 60.0 if args.quick else 600.0
    with tempfile.TemporaryDirectory(prefix="publish-bench-") as work:
        parts = story_parts(seconds, Path(work))
    steps = {"upload": upload_step(args.with_upload, args.token)} if args.with_upload else {}
    key = SigningKey.generate()
    runs = {"plain": publish_story(parts, disguise=False, key=key, extra_steps=steps),
            "disguise": publish_story(parts, disguise=True, key=key, extra_steps=steps)}

    plain, masked = runs["plain"], runs["disguise"]
    print(f"Publish benchmark: a {plain['duration_s'] / 60:.1f}-minute story in {PARTS} parts"
          f" ({'quick' if args.quick else 'full'}), {os.cpu_count()} cores, shared machine")
    print(f"{'':<28} {'no disguise':>14} {'disguise':>14}")
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("story duration (s)", lambda r: f"{r['duration_s']:.1f}"),
        ("wall time (s)", lambda r: f"{r['wall_s']:.2f}"),
        ("CPU time (s)", lambda r: f"{r['cpu_s']:.2f}"),
    ]
    rows.append(("  Opus encodings", lambda r: str(r["encodings"])))
    for stage in dict.fromkeys([*plain["stages_s"], *masked["stages_s"]]):
        rows.append((f"  {stage} (s)", lambda r, s=stage: (f"{r['stages_s'][s]:.2f}"
                                                         if s in r["stages_s"] else "-")))
    rows += [
        ("speed vs real time (wall)", lambda r: f"{r['speed_x_real_time']:.1f}x"),
        ("speed vs real time (CPU)", lambda r: f"{r['cpu_speed_x_real_time']:.1f}x"),
        ("target (wall)", lambda r: f">= {TARGETS['disguise' if r['disguise'] else 'plain']:g}x"),
        ("loudness (LUFS, decoded)", lambda r: f"{r['lufs']:.2f}"),
        ("true peak (dBTP, decoded)", lambda r: f"{r['true_peak_dbtp']:.2f}"),
        ("Opus bytes", lambda r: f"{r['bytes']:,}"),
        ("Opus kbit/s", lambda r: f"{r['kbit_per_s']:.1f}"),
        ("load avg 1 min (start/end)", lambda r: "/".join(f"{v:.1f}"
                                                          for v in r["load_average_1min"])),
    ]
    for label, show in rows:
        print(f"{label:<28} {show(plain):>14} {show(masked):>14}")

    failed = [name for name, run in runs.items()
              if run["speed_x_real_time"] < TARGETS[name]
              or abs(run["lufs"] - audio.TARGET_LUFS) > 0.5
              or run["true_peak_dbtp"] > audio.CEILING_DBTP]
    print("targets met" if not failed else f"targets missed: {', '.join(failed)}")

    sync: dict[str, Any] | None = None
    sync_failed: list[str] = []
    if not args.no_catalog_sync:
        sync = catalog_sync_runs(50 if args.quick else 200)
        sync_failed = catalog_sync_problems(sync)
        print()
        print_catalog_sync(sync, quick=args.quick)
        print("catalog sync checks met" if not sync_failed
              else f"catalog sync checks missed: {'; '.join(sync_failed)}")
    if args.json:
        args.json.write_text(json.dumps({
            "size": "quick" if args.quick else "full", "cpu_count": os.cpu_count(),
            "targets_x_real_time": TARGETS, "runs": runs, "targets_failed": failed,
            "catalog_sync": sync, "catalog_sync_failed": sync_failed,
        }, indent=2) + "\n")
    return 1 if failed or sync_failed else 0


def catalog_sync_problems(sync: dict[str, Any]) -> list[str]:
    """What the kiosk catalog sync did not do as it must (empty: all good)."""
    count = sync["setup"]["stories"]
    first, again = sync["first_sync"], sync["nothing_new"]
    problems = []
    if first["result"]["error"] or first["result"]["catalog_error"] \
            or not first["result"]["catalog_installed"]:
        problems.append(f"first sync: {first['result']}")
    if first["library_stories"] != count or first["library_error"]:
        problems.append(f"library holds {first['library_stories']} of {count} stories"
                        f" ({first['library_error']})")
    stories = first["by_kind"].get("story", {})
    if stories.get("statuses") != {"200": count}:
        problems.append(f"story downloads: {stories.get('statuses')}")
    if not again["single_304"]:
        problems.append(f"nothing new: catalog requests {again['catalog_requests']}")
    if set(again["by_kind"]) - {"catalog", "heartbeat"}:
        problems.append(f"nothing new: other requests {sorted(again['by_kind'])}")
    if again["library_stories"] != count:
        problems.append(f"nothing new: library holds {again['library_stories']} stories")
    if again["body_bytes"] or again["result"]["catalog_error"]:
        problems.append(f"nothing new: {again['body_bytes']} body bytes,"
                        f" {again['result']['catalog_error']}")
    return problems


def print_catalog_sync(sync: dict[str, Any], *, quick: bool) -> None:
    setup, first, again = sync["setup"], sync["first_sync"], sync["nothing_new"]
    print(f"Kiosk catalog sync: {setup['stories']} stories"
          f" ({'quick' if quick else 'full'}), real central serve on loopback, in-process"
          " sync_once")
    print(f"  stories: Ogg/Opus {setup['kbit_per_s']:.1f} kbit/s, 20-60 s each"
          f" ({setup['audio_seconds'] / 60:.0f} min in all), mean"
          f" {setup['mean_story_bytes']:,} B; {setup['base_clips']} encoded clips, each"
          " story its own Ogg serial (distinct SHA-256)")
    print(f"  setup: encode {setup['encode_s']:.1f} s, PUT {setup['stories']} stories +"
          f" catalog ({setup['catalog_bytes']:,} B) {setup['upload_s']:.1f} s")

    def kind(run: dict[str, Any], name: str) -> str:
        group = run["by_kind"].get(name)
        if group is None:
            return "0"
        statuses = ",".join(f"{n}x{code}" for code, n in group["statuses"].items())
        return f"{group['requests']} ({statuses})"

    print(f"{'':<28} {'first sync':>22} {'nothing new':>22}")
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("stories in catalog", lambda r: str(setup["stories"])),
        ("story audio bytes", lambda r: f"{setup['audio_bytes']:,}"),
        ("wall time (s)", lambda r: f"{r['wall_s']:.3f}"),
        ("MB/s (audio / wall)", lambda r: f"{r['mb_per_s']:.1f}" if "mb_per_s" in r else "-"),
        ("requests", lambda r: str(r["requests"])),
        ("  catalog (+ .sig)", lambda r: kind(r, "catalog")),
        ("  story audio", lambda r: kind(r, "story")),
        ("  heartbeat (apart)", lambda r: kind(r, "heartbeat")),
        ("  other", lambda r: kind(r, "other")),
        ("body bytes received", lambda r: f"{r['body_bytes']:,}"),
        ("  of them catalog",
         lambda r: f"{r['by_kind'].get('catalog', {}).get('body_bytes', 0):,}"),
        ("header bytes received", lambda r: f"{r['header_bytes']:,}"),
        ("catalog installed (pass)", lambda r: "yes" if r["result"]["catalog_installed"] else "no"),
        ("library stories after", lambda r: str(r["library_stories"])),
    ]
    for label, show in rows:
        print(f"{label:<28} {show(first):>22} {show(again):>22}")


if __name__ == "__main__":
    sys.exit(main())
