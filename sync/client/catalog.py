"""The kiosk's catalog puller: fetch the signed catalog, check it, download its audio.

One pull, as ``kiosk/sync_runner.py`` drives it after the outbox:

1. ``GET /api/v1/catalog`` with ``If-None-Match`` naming the installed catalog (the
   ETag the service gave for it, kept in ``etag.json``, else ``"<sha256 of its
   bytes>"``, the service's own ETag rule). ``304``: nothing new, and that one
   request is the whole pull. ``404``: nothing is published yet.
2. ``GET /api/v1/catalog.sig``, then :func:`sync.catalog.verify` under the publishing
   key **pinned in the kiosk's config** (the service's word is never asked: a
   compromised service can serve anything, DESIGN.md threat model 2), then
   :func:`sync.catalog.check_newer` against the installed version: an older catalog
   replayed, or another with the installed version, is refused before any audio is
   fetched.
3. :meth:`CatalogPuller.download`: each story whose audio the kiosk lacks is fetched
   from ``{server_url}/api/v1/{story.url}`` into ``<download dir>/<id>.<sha
   prefix>.part``. A cut keeps the bytes that arrived (flushed and fsynced), and the
   next attempt asks ``Range: bytes=<part size>-``, so a resumed download fetches only
   what was missing. The file is then checked against the catalog's size and SHA-256;
   a file that differs is deleted and the whole catalog refused
   (:class:`sync.catalog.BadAudio`).

The caller then hands the verified files to the kiosk's library, which checks them
again while renaming them in and swaps the catalog atomically
(kiosk/stories/library.py), and calls :meth:`CatalogPuller.remember_etag`.

Failures: :class:`~sync.catalog.CatalogError` subclasses for a catalog that must not
be installed (bad signature, malformed, stale, audio that differs or is missing);
:class:`~sync.client.errors.Transient` for the network and a busy or failing service
(the parts downloaded so far stay for the next pass); :class:`~sync.client.errors.
Revoked` for a 401; :class:`~sync.client.errors.Stopped` when asked to stop.

Every request has the same limits as the uploader's (sync/client/http.py): httpx's
per-operation timeouts plus an overall deadline per request, checked between the
pieces of the reply. A large story that cannot arrive within one request's deadline
continues at once with a Range request from where it got to, as long as each request
makes progress.

This module never imports ``kiosk``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import httpx

from sync import catalog as catalog_mod
from sync.catalog import BadAudio, BadSignature, Catalog, Story
from sync.signing import VerifyKey

from .errors import Revoked, Stopped, Transient, safe_code
from .http import DEFAULT_TIMEOUTS, Reply, Timeouts, transient_for

__all__ = ["CatalogPuller", "Fetched", "Installed", "catalog_etag", "check_audio_file",
           "verify_new"]

API = "/api/v1"
CATALOG_URL = f"{API}/catalog"
SIGNATURE_URL = f"{API}/catalog.sig"
ETAG_FILE = "etag.json"
PART_SUFFIX = ".part"
#: A signature is one short line (idrsig1...); anything longer is not one.
MAX_SIGNATURE_BYTES = 4096
#: Error bodies are short JSON; the rest of a long one is not read.
MAX_ERROR_BYTES = 64 * 1024
#: Requests for one story's audio within one pull, as long as each one makes progress.
MAX_ROUNDS = 64
_CHUNK = 1024 * 1024
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def catalog_etag(data: bytes) -> str:
    """The ETag the service gives ``data`` (the quoted SHA-256 hex of its bytes)."""
    return f'"{hashlib.sha256(data).hexdigest()}"'


@dataclass(frozen=True)
class Installed:
    """What the kiosk holds now: the installed catalog's version and exact bytes (None
    for both: none installed, or none that verifies with the pinned key)."""

    version: int | None = None
    data: bytes | None = None


@dataclass
class Fetched:
    #: "unchanged" (304, or the very bytes installed), "none" (nothing published yet)
    #: or "new" (a verified catalog newer than the installed one).
    status: str
    catalog: Catalog | None = None
    data: bytes | None = None
    signature: str | None = None
    etag: str | None = None


class _TooLong(Exception):
    """The service sent more bytes than the catalog says the file has."""


Sink = Callable[[int, httpx.Headers], "tuple[BinaryIO, int] | None"]


@dataclass
class Counters:
    requests: int = 0
    #: Audio bytes received in this pull (what went over the wire).
    audio_bytes: int = 0
    #: Audio bytes a download did not fetch again because a ``.part`` held them.
    resumed_bytes: int = 0
    downloaded: list[str] = field(default_factory=list)


class CatalogPuller:
    """Pulls the catalog through ``client`` (base URL: the service; its token set)."""

    def __init__(self, client: httpx.Client, *, publisher_key: VerifyKey | str,
                 download_dir: Path, timeouts: Timeouts = DEFAULT_TIMEOUTS,
                 stop: threading.Event | None = None) -> None:
        self.client = client
        self.publisher_key = publisher_key
        self.download_dir = Path(download_dir)
        self.timeouts = timeouts
        self.stop = stop
        self.counters = Counters()

    # -------------------------------------------------------------------- the catalog

    def fetch(self, installed: Installed) -> Fetched:
        """Steps 1 and 2 of the module doc: what the service publishes, verified."""
        headers: dict[str, str] = {"Accept": "application/json"}
        if installed.data is not None:
            headers["If-None-Match"] = self._etag_for(installed.data)
        reply = self._get(CATALOG_URL, headers, limit=catalog_mod.MAX_CATALOG_BYTES)
        if reply.status == 304:
            return Fetched("unchanged")
        if reply.status == 404:
            return Fetched("none")
        if reply.status != 200:
            raise transient_for(reply)
        data = reply.body
        etag = reply.headers.get("etag")
        if installed.data is not None and data == installed.data:
            # The service ignored If-None-Match: the same bytes are nothing new.
            return Fetched("unchanged", etag=etag)
        sig_reply = self._get(SIGNATURE_URL, {"Accept": "text/plain"},
                              limit=MAX_SIGNATURE_BYTES)
        if sig_reply.status == 404:
            raise BadSignature("the service serves a catalog without a signature")
        if sig_reply.status != 200:
            raise transient_for(sig_reply)
        try:
            signature = sig_reply.body.decode("ascii")
        except UnicodeDecodeError:
            raise BadSignature("the catalog's signature is not text") from None
        catalog = verify_new(data, signature, self.publisher_key, installed.version)
        return Fetched("new", catalog=catalog, data=data, signature=signature.strip(),
                       etag=etag)

    def _etag_for(self, data: bytes) -> str:
        """The ETag the service gave ``data`` if we kept it, else the spec's own."""
        digest = hashlib.sha256(data).hexdigest()
        try:
            kept = json.loads((self.download_dir / ETAG_FILE).read_text(encoding="utf-8"))
            if (isinstance(kept, dict) and kept.get("sha256") == digest
                    and isinstance(kept.get("etag"), str) and kept["etag"].isprintable()
                    and len(kept["etag"]) <= 256):
                return str(kept["etag"])
        except (OSError, ValueError):
            pass
        return f'"{digest}"'

    def remember_etag(self, etag: str | None, data: bytes) -> None:
        """Keep the service's ETag for ``data`` once it is installed."""
        if not etag:
            return
        self.download_dir.mkdir(parents=True, exist_ok=True)
        path = self.download_dir / ETAG_FILE
        temp = path.with_suffix(".tmp")
        temp.write_text(json.dumps({"etag": etag,
                                    "sha256": hashlib.sha256(data).hexdigest()}),
                        encoding="utf-8")
        os.replace(temp, path)

    # ---------------------------------------------------------------------- the audio

    def part_path(self, story: Story) -> Path:
        # The hash in the name: a story whose audio changed never resumes old bytes.
        return self.download_dir / f"{story.id}.{story.audio_sha256[:16]}{PART_SUFFIX}"

    def download(self, stories: Iterable[Story], *,
                 keep: Iterable[Story] = ()) -> dict[str, Path]:
        """Download and verify each of ``stories``; {story id: verified file}.

        Leftover ``.part`` files of stories not in ``stories`` or ``keep`` are deleted.
        """
        wanted = list(stories)
        self.download_dir.mkdir(parents=True, exist_ok=True)
        names = {self.part_path(s).name for s in (*wanted, *keep)}
        for leftover in self.download_dir.glob(f"*{PART_SUFFIX}"):
            if leftover.name not in names:
                leftover.unlink(missing_ok=True)
        files: dict[str, Path] = {}
        for story in wanted:
            files[story.id] = self._download_one(story)
        return files

    def _download_one(self, story: Story) -> Path:
        part = self.part_path(story)
        url = self._audio_url(story)
        restarted = False
        for _round in range(MAX_ROUNDS):
            have = part.stat().st_size if part.exists() else 0
            if have > story.size:
                part.unlink()
                have = 0
            if have == story.size:
                break
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                reply = self._get(url, headers, limit=0,
                                  sink=lambda status, h, have=have: self._sink(
                                      story, part, status, h, have))
            except _TooLong:
                part.unlink(missing_ok=True)
                raise BadAudio(story.id, "the service sent more audio than the catalog"
                                         " says") from None
            except Transient as exc:
                now = part.stat().st_size if part.exists() else 0
                if exc.code == "deadline" and now > have:
                    continue  # progress was made: ask for the rest at once
                raise
            if reply.status in (200, 206):
                continue  # written; the loop looks at the size again
            if reply.status == 416 and not restarted:
                part.unlink(missing_ok=True)
                restarted = True
                continue
            if reply.status == 404:
                raise BadAudio(story.id, "the service has no audio for it", missing=True)
            raise transient_for(reply)
        else:
            raise Transient("deadline")
        self._verify(story, part)
        self.counters.downloaded.append(story.id)
        return part

    def _audio_url(self, story: Story) -> str:
        if story.url.startswith(("https://", "http://")):
            return story.url
        return f"{API}/{story.url}"

    def _sink(self, story: Story, part: Path, status: int, headers: httpx.Headers,
              have: int) -> tuple[BinaryIO, int] | None:
        """Where the body of a 200 or 206 answer goes and how many bytes it may hold;
        None for any other status."""
        if status == 206:
            match = _CONTENT_RANGE.fullmatch(headers.get("content-range", "").strip())
            if match is None or int(match.group(1)) != have:
                # Not the range asked for: never append bytes to the wrong place.
                raise Transient("bad_range", status=206)
            if have:
                self.counters.resumed_bytes += have
            return part.open("ab"), story.size - have
        if status == 200:
            # The whole file again (no Range asked, or the server ignored it).
            return part.open("wb"), story.size
        return None

    @staticmethod
    def _verify(story: Story, part: Path) -> None:
        check_audio_file(story, part)

    # ------------------------------------------------------------------ one request

    def _get(self, url: str, headers: dict[str, str], *, limit: int,
             sink: Sink | None = None) -> Reply:
        """GET ``url`` within the overall deadline. Without ``sink`` the body (at most
        ``limit`` bytes) is returned; with one, a 200/206 body goes to the file it
        gives (flushed and fsynced whatever happens, so a cut keeps what arrived),
        at most as many bytes as it says. Transport trouble -> Transient; 401 ->
        Revoked."""
        deadline = time.monotonic() + self.timeouts.attempt_deadline_s

        def remaining() -> float:
            if self.stop is not None and self.stop.is_set():
                raise Stopped()
            left = deadline - time.monotonic()
            if left <= 0:
                raise Transient("deadline")
            return left

        self.counters.requests += 1
        try:
            request = self.client.build_request("GET", url, headers=headers,
                                                timeout=self.timeouts.httpx(remaining()))
            if request.url.host != self.client.base_url.host:
                # Audio published elsewhere: the device's token stays with its service.
                request.headers.pop("authorization", None)
            response = self.client.send(request, stream=True)
            try:
                return self._read(response, limit=limit, sink=sink, remaining=remaining)
            finally:
                response.close()
        except (httpx.TimeoutException, httpx.TransportError, httpx.StreamError):
            raise Transient("network") from None

    def _read(self, response: httpx.Response, *, limit: int, sink: Sink | None,
              remaining: Callable[[], float]) -> Reply:
        status = response.status_code
        opened = sink(status, response.headers) if sink is not None else None
        if opened is None:
            cap = limit if sink is None and status in (200, 206) else MAX_ERROR_BYTES
            pieces: list[bytes] = []
            size = 0
            for piece in response.iter_bytes():
                remaining()
                size += len(piece)
                if size > cap:
                    if sink is None and status == 200:
                        raise catalog_mod.Malformed("", f"is more than {cap} bytes")
                    break
                pieces.append(piece)
            reply = Reply(status, response.headers, b"".join(pieces), response.url)
            if status == 401:
                raise Revoked(safe_code(reply.error_code(), "unauthorized"), status=401)
            return reply
        target, allowed = opened
        written = 0
        try:
            for piece in response.iter_bytes():
                remaining()
                if written + len(piece) > allowed:
                    raise _TooLong()  # never keep a file longer than the catalog's
                target.write(piece)
                written += len(piece)
                self.counters.audio_bytes += len(piece)
        finally:
            with contextlib.suppress(OSError):
                target.flush()
                os.fsync(target.fileno())
            target.close()
        return Reply(status, response.headers, b"", response.url)


def verify_new(data: bytes, signature: str, publisher_key: VerifyKey | str,
               installed_version: int | None) -> Catalog:
    """A catalog the kiosk may take: signed by the pinned ``publisher_key`` and newer
    than the installed version (:class:`~sync.catalog.CatalogError` otherwise). The one
    check of the network pull and of a catalog brought on a USB stick (kiosk/usb/)."""
    catalog = catalog_mod.verify(data, signature, publisher_key)
    catalog_mod.check_newer(catalog, installed_version)
    return catalog


def check_audio_file(story: Story, part: Path) -> None:
    """:class:`~sync.catalog.BadAudio` (and the file deleted) unless ``part`` has the
    story's size and SHA-256: a download's check, and a USB copy's (kiosk/usb/)."""
    digest = hashlib.sha256()
    size = 0
    with part.open("rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
            size += len(block)
    if size != story.size or digest.hexdigest() != story.audio_sha256:
        part.unlink(missing_ok=True)  # fetched again from scratch next time
        raise BadAudio(story.id, "downloaded audio differs from the catalog's size or"
                                 " SHA-256")
