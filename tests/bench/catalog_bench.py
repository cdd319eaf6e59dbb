"""Kiosk catalog sync against a real ``central serve`` (issue 12's benchmark, second part).

Used by tests/bench/publish.py. :func:`catalog_sync_runs` starts the service on loopback
(tests/harness/central.py), pins a publishing key, uploads ``count`` stories of real
Ogg/Opus as a vetter, publishes a signed catalog naming them, enrols a fresh kiosk with
the ``kiosk enrol`` CLI, then times ``kiosk.sync_runner.sync_once`` in-process twice:
the first pass fetches everything, the second has nothing new and must cost a single
``GET /catalog`` answered 304 (the heartbeat is counted apart).

Encoding 200 distinct stories would take minutes of CPU on a shared machine, so a few
base clips (tone plus noise, 20-60 s, each its own seed) are encoded once and each story
is a copy with its own Ogg stream serial number, page CRCs recomputed: distinct bytes
and SHA-256, still a valid, playable Ogg/Opus file of realistic size.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from sync import catalog
from sync.envelope.mlkem import MlkemIdentity
from sync.signing import SigningKey
from sync.vet import audio

REPO = Path(__file__).resolve().parents[2]
API = "/api/v1"
#: Base clip durations (s): each story is a re-serialised copy of one of these.
CLIP_SECONDS = (20.0, 27.0, 34.0, 41.0, 48.0, 60.0)

_BIT_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def _reverse32(value: int) -> int:
    return int(f"{value:032b}"[::-1], 2)


def ogg_crc(data: bytes) -> int:
    """Ogg's page CRC (poly 0x04C11DB7, not reflected, init 0, no final xor) via zlib.

    zlib's CRC-32 is the reflected form of the same polynomial: fed bit-reversed bytes
    from a zero register (``value=0xFFFFFFFF`` undoes zlib's inversion), its result
    is the bit-reversal of Ogg's.
    """
    return _reverse32(zlib.crc32(data.translate(_BIT_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF)


def _pages(ogg: bytes) -> Iterator[tuple[int, int]]:
    """(start, end) of each Ogg page."""
    at = 0
    while at < len(ogg):
        if ogg[at:at + 4] != b"OggS":
            raise ValueError(f"no Ogg page at byte {at}")
        segments = ogg[at + 26]
        body = sum(ogg[at + 27:at + 27 + segments])
        end = at + 27 + segments + body
        yield at, end
        at = end


def with_serial(ogg: bytes, serial: int) -> bytes:
    """``ogg`` (one logical stream) with another stream serial number, CRCs redone."""
    out = bytearray()
    for start, end in _pages(ogg):
        page = bytearray(ogg[start:end])
        page[14:18] = serial.to_bytes(4, "little")
        page[22:26] = b"\0\0\0\0"
        page[22:26] = ogg_crc(bytes(page)).to_bytes(4, "little")
        out += page
    return bytes(out)


def base_clips(count: int) -> list[tuple[bytes, float]]:
    """``count`` Ogg/Opus clips (bytes, duration): a tone plus noise, seeded apiece."""
    clips = []
    for i in range(count):
        seconds = CLIP_SECONDS[i % len(CLIP_SECONDS)]
        rng = np.random.default_rng(1000 + i)
        t = np.arange(int(seconds * audio.SAMPLE_RATE)) / audio.SAMPLE_RATE
        tone = 0.2 * np.sin(2 * np.pi * (180 + 40 * i) * t) * (0.6 + 0.4 * np.sin(t))
        samples = tone + 0.05 * rng.standard_normal(t.size)
        clips.append((audio.encode_opus(samples.astype(np.float32)), seconds))
    return clips


class CountingStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, counter: CountingTransport,
                 index: int) -> None:
        self.inner, self.counter, self.index = inner, counter, index

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.inner:
            self.counter.add_body(self.index, len(chunk))
            yield chunk

    def close(self) -> None:
        self.inner.close()


class CountingTransport(httpx.BaseTransport):
    """An ``httpx.HTTPTransport`` that records each request: path, status, body bytes
    received and the response header bytes (as they would appear on the wire)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.requests: list[dict[str, Any]] = []

    def add_body(self, index: int, size: int) -> None:
        self.requests[index]["body_bytes"] += size

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        header_bytes = sum(len(k) + len(v) + 4 for k, v in response.headers.raw) + 17
        self.requests.append({"method": request.method, "path": request.url.path,
                              "status": response.status_code, "body_bytes": 0,
                              "header_bytes": header_bytes})
        assert isinstance(response.stream, httpx.SyncByteStream)
        return httpx.Response(response.status_code, headers=response.headers,
                              stream=CountingStream(response.stream, self,
                                                    len(self.requests) - 1),
                              extensions=response.extensions)

    def close(self) -> None:
        self.inner.close()

    def reset(self) -> None:
        self.requests = []

    def summary(self) -> dict[str, Any]:
        def kind(path: str) -> str:
            if path.startswith(f"{API}/catalog"):
                return "catalog"
            if path.startswith(f"{API}/stories/"):
                return "story"
            if path == f"{API}/devices/heartbeat":
                return "heartbeat"
            return "other"

        groups: dict[str, dict[str, Any]] = {}
        for r in self.requests:
            g = groups.setdefault(kind(r["path"]), {"requests": 0, "statuses": Counter(),
                                                    "body_bytes": 0, "header_bytes": 0})
            g["requests"] += 1
            g["statuses"][str(r["status"])] += 1
            g["body_bytes"] += r["body_bytes"]
            g["header_bytes"] += r["header_bytes"]
        for g in groups.values():
            g["statuses"] = dict(sorted(g["statuses"].items()))
        return {"requests": len(self.requests),
                "statuses": dict(sorted(Counter(str(r["status"])
                                                for r in self.requests).items())),
                "body_bytes": sum(r["body_bytes"] for r in self.requests),
                "header_bytes": sum(r["header_bytes"] for r in self.requests),
                "by_kind": groups,
                "catalog_requests": [(r["method"], r["path"], r["status"], r["body_bytes"])
                                     for r in self.requests if kind(r["path"]) == "catalog"]}


def _check(reply: httpx.Response, what: str) -> None:
    if reply.status_code not in (200, 201):
        raise RuntimeError(f"{what} answered {reply.status_code}: {reply.text[:300]}")


def publish(url: str, token: str, count: int, key: SigningKey,
            recipient: str, prompts: tuple[str, ...]) -> dict[str, Any]:
    """Upload ``count`` stories and a signed catalog naming them; figures of the setup."""
    began = time.perf_counter()
    clips = base_clips(min(count, len(CLIP_SECONDS)))
    encode_s = time.perf_counter() - began
    stories, total, seconds = [], 0, 0.0
    headers = {"Authorization": f"Bearer {token}"}
    began = time.perf_counter()
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        for i in range(count):
            base, duration = clips[i % len(clips)]
            ogg = with_serial(base, 0x5EED0000 + i)
            digest = hashlib.sha256(ogg).hexdigest()
            story_id = f"bench-{i:04d}"
            _check(client.put(f"{API}/stories/{story_id}.ogg", content=ogg,
                              headers={"Content-Type": "audio/ogg",
                                       "X-Content-SHA256": digest}), "PUT story")
            stories.append(catalog.Story(
                id=story_id, title=f"Benchmark story {i}", display_name="Anonymous",
                country="KE", region="Africa", themes=("land",), language="en",
                duration_s=duration, transcript="Benchmark transcript. " * 20,
                audio_sha256=digest, size=len(ogg), url=f"stories/{story_id}.ogg"))
            total += len(ogg)
            seconds += duration
        data = catalog.build(catalog.Catalog(
            version=1, issued_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            recipients=(recipient,), prompts=prompts, stories=tuple(stories)))
        _check(client.put(f"{API}/catalog", json={"catalog": data.decode("utf-8"),
                                                  "signature": catalog.sign(data, key)}),
               "PUT catalog")
    if len({s.audio_sha256 for s in stories}) != count:
        raise RuntimeError("story hashes are not distinct")
    return {"stories": count, "base_clips": len(clips), "encode_s": round(encode_s, 2),
            "upload_s": round(time.perf_counter() - began, 2), "audio_bytes": total,
            "audio_seconds": round(seconds, 1), "catalog_bytes": len(data),
            "mean_story_bytes": total // count,
            "kbit_per_s": round(total * 8 / seconds / 1000, 1)}


def catalog_sync_runs(count: int) -> dict[str, Any]:
    """Both measurements: the first sync of ``count`` stories, then a sync of nothing new."""
    from kiosk import config as kiosk_config
    from kiosk.prompts import load_prompts
    from kiosk.stories import StoryLibrary
    from kiosk.sync_runner import sync_once
    from kiosk.vault.store import Store
    from tests.harness.central import CentralService, _env

    key = SigningKey.generate()
    recipient = str(MlkemIdentity.generate().recipient())
    prompts = tuple(p.id for p in load_prompts())
    with tempfile.TemporaryDirectory(prefix="catalog-bench-") as tmp:
        work = Path(tmp)
        with CentralService(work / "central") as service:
            service.cli("set-publisher-key", str(key.verify_key))
            setup = publish(service.url, service.vetter_token("bench"), count, key,
                            recipient, prompts)

            data_dir = work / "kiosk"
            config = work / "kiosk.toml"
            config.write_text(f'data_dir = "{data_dir}"\nrecipients = ["{recipient}"]\n'
                              f'publisher_key = "{key.verify_key}"\n', encoding="utf-8")
            done = subprocess.run([sys.executable, "-m", "kiosk", "--config", str(config),
                                   "enrol", "--server", service.url,
                                   "--code", service.enrol_code()],
                                  capture_output=True, text=True, timeout=120, cwd=REPO,
                                  env=_env())
            if done.returncode != 0:
                raise RuntimeError(f"kiosk enrol exited {done.returncode}: {done.stderr}")

            cfg = kiosk_config.load(config)
            store = Store.in_data_dir(cfg.data_dir)
            transport = CountingTransport()
            try:
                began = time.perf_counter()
                first = sync_once(cfg, store, transport=transport)
                first_s = time.perf_counter() - began
                first_counts = transport.summary()
                library = StoryLibrary(cfg.data_dir, cfg.publisher_key)
                loaded = library.load()
                shown = len(library.stories())

                transport.reset()
                began = time.perf_counter()
                second = sync_once(cfg, store, transport=transport)
                second_s = time.perf_counter() - began
                second_counts = transport.summary()
                after = StoryLibrary(cfg.data_dir, cfg.publisher_key)
                after.load()
                shown_after = len(after.stories())
            finally:
                transport.close()
                store.close()

    def result_of(r: Any) -> dict[str, Any]:
        return {"error": r.error, "catalog_version": r.catalog_version,
                "catalog_installed": r.catalog_installed, "catalog_error": r.catalog_error}

    nothing_new = second_counts["catalog_requests"]
    return {
        "setup": setup,
        "first_sync": {
            "wall_s": round(first_s, 3),
            "mb_per_s": round(setup["audio_bytes"] / first_s / 1e6, 2),
            "result": result_of(first), **first_counts,
            "library_stories": shown, "library_version": loaded.version,
            "library_error": loaded.error,
        },
        "nothing_new": {
            "wall_s": round(second_s, 3), "result": result_of(second), **second_counts,
            "library_stories": shown_after,
            "single_304": [status for _m, _p, status, _b in nothing_new] == [304],
        },
    }
