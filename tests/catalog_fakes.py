"""The catalog side of a fake central service, for ``httpx.MockTransport``.

:class:`CatalogRoutes` is a fault for :class:`tests.sync_fakes.FakeCentral` (tried
before its own routes) that serves ``GET /api/v1/catalog`` and ``/catalog.sig`` with
the spec's ETag rule (the quoted SHA-256 of the bytes; ``If-None-Match`` equal ->
304) and ``GET /api/v1/stories/<id>.ogg`` with single ``Range`` requests (206, 416).
A test publishes with :meth:`CatalogRoutes.publish`, or serves any bytes it likes
(``catalog``, ``signature``, ``audio``) to play a compromised service; ``cut_after``
cuts a story's next download after that many bytes (a network cut mid-body).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx

from sync import catalog as catalog_mod
from sync.catalog import Catalog, Story
from sync.envelope import X25519Identity
from sync.signing import SigningKey

from .sync_fakes import API, FakeCentral

PUBLISHER = SigningKey(bytes(range(7, 39)))
OTHER_PUBLISHER = SigningKey(bytes(range(9, 41)))
CLASSIC_RECIPIENT = str(X25519Identity(bytes(range(32))).recipient())
PROMPTS = ("work", "why", "message")
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


def audio_for(story_id: str, size: int = 5000, edition: int = 0) -> bytes:
    """Deterministic fake "audio" of exactly ``size`` bytes."""
    seed = f"OggS {story_id} edition {edition} ".encode()
    return (seed * (size // len(seed) + 1))[:size]


def story_for(story_id: str, audio: bytes, i: int = 0) -> Story:
    return Story(id=story_id, title=f"Story {story_id}", display_name="Anonymous",
                 country=("KE", "CO", "PH", "FR")[i % 4], region="Africa",
                 themes=("land",), language="en", duration_s=12.5,
                 transcript=f"The story of {story_id}.", audio_sha256=hashlib.sha256(
                     audio).hexdigest(), size=len(audio), url=f"stories/{story_id}.ogg")


@dataclass
class Edition:
    catalog: Catalog
    data: bytes
    signature: str
    audio: dict[str, bytes]


class _CutStream(httpx.SyncByteStream):
    """A body that stops with a network error after ``cut`` bytes."""

    def __init__(self, data: bytes, cut: int) -> None:
        self.data, self.cut = data, cut

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        while sent < self.cut:
            piece = self.data[sent:min(self.cut, sent + 16 * 1024)]
            sent += len(piece)
            yield piece
        raise httpx.ReadError("connection reset by peer")


@dataclass
class CatalogRoutes:
    #: What GET /catalog and /catalog.sig serve now (None: 404).
    catalog: bytes | None = None
    signature: str | None = None
    #: story id -> the bytes GET /stories/<id>.ogg serves.
    audio: dict[str, bytes] = field(default_factory=dict)
    #: story id -> cut its next download after this many body bytes (then forgotten).
    cut_after: dict[str, int] = field(default_factory=dict)
    #: (path, status, Range header or "", body bytes sent) of every request served here.
    served: list[tuple[str, int, str, int]] = field(default_factory=list)
    editions: list[Edition] = field(default_factory=list)

    def install(self, central: FakeCentral) -> CatalogRoutes:
        central.faults.append(self)
        return self

    def publish(self, version: int, stories: dict[str, bytes], *,
                key: SigningKey = PUBLISHER, recipients: tuple[str, ...] | None = None,
                prompts: tuple[str, ...] = PROMPTS, serve: bool = True) -> Edition:
        """Build and sign catalog ``version`` of ``stories`` (id -> audio); serve it."""
        catalog = Catalog(
            version=version, issued_at="2026-11-28T10:00:00Z",
            recipients=recipients or (CLASSIC_RECIPIENT,), prompts=prompts,
            stories=tuple(story_for(sid, audio, i) for i, (sid, audio)
                          in enumerate(stories.items())))
        data = catalog_mod.build(catalog)
        edition = Edition(catalog, data, catalog_mod.sign(data, key), dict(stories))
        self.editions.append(edition)
        if serve:
            self.serve(edition)
        return edition

    def serve(self, edition: Edition) -> None:
        self.catalog, self.signature = edition.data, edition.signature
        self.audio.update(edition.audio)

    def requests(self, prefix: str = "") -> list[tuple[str, int, str, int]]:
        return [r for r in self.served if r[0].startswith(API + prefix)]

    # -- the fault protocol of FakeCentral -----------------------------------------------
    def __call__(self, request: httpx.Request, central: FakeCentral) -> httpx.Response | None:
        path = request.url.path
        if request.method != "GET" or not (path.startswith(f"{API}/catalog")
                                           or path.startswith(f"{API}/stories/")):
            return None
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token not in central.tokens:
            return self._answer(request, httpx.Response(401, json={"error": "unauthorized"}), 0)
        if path in (f"{API}/catalog", f"{API}/catalog.sig"):
            body = self.catalog if path.endswith("catalog") else (
                self.signature.encode() if self.signature is not None else None)
            if body is None or self.catalog is None:
                return self._answer(request, httpx.Response(404, json={"error": "not_found"}), 0)
            etag = f'"{hashlib.sha256(body).hexdigest()}"'
            if request.headers.get("if-none-match") == etag:
                return self._answer(request, httpx.Response(304, headers={"ETag": etag}), 0)
            kind = "application/json" if path.endswith("catalog") else "text/plain"
            return self._answer(request, httpx.Response(
                200, content=body, headers={"ETag": etag, "Content-Type": kind}), len(body))
        story_id = path.removeprefix(f"{API}/stories/").removesuffix(".ogg")
        data = self.audio.get(story_id)
        if data is None:
            return self._answer(request, httpx.Response(404, json={"error": "not_found"}), 0)
        start, status, headers = 0, 200, {"Accept-Ranges": "bytes"}
        wanted = request.headers.get("range")
        if wanted:
            match = _RANGE.fullmatch(wanted)
            assert match is not None, wanted
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else len(data) - 1
            if start >= len(data):
                return self._answer(request, httpx.Response(
                    416, headers={"Content-Range": f"bytes */{len(data)}"}), 0)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data = data[start:end + 1]
        cut = self.cut_after.pop(story_id, None)
        if cut is not None and cut < len(data):
            self.served.append((path, status, wanted or "", cut))
            return httpx.Response(status, headers=headers, stream=_CutStream(data, cut))
        return self._answer(request, httpx.Response(status, content=data, headers=headers),
                            len(data))

    def _answer(self, request: httpx.Request, response: httpx.Response,
                sent: int) -> httpx.Response:
        self.served.append((request.url.path, response.status_code,
                            request.headers.get("range", ""), sent))
        return response
