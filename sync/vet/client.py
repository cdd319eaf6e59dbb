"""The vet tool's HTTP client: the vetter endpoints of the central service.

Every request carries the vetter token and explicit timeouts. Errors become
:class:`ServiceError` with the service's machine code (``{"error": code}``) and a
short English message: the CLI prints that one line. The token never appears in a
message.

``transport`` is the seam for tests (an ``httpx.MockTransport``, or a wrapper that
alters bytes to show that a tampered part is refused).

Parts are downloaded with resume: what is already on disk is hashed, the rest is asked
for with ``Range: bytes=<size>-``, appended and fsynced; the part's SHA-256 is checked
against the queue's before the caller may mark anything complete.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

__all__ = ["IntegrityError", "ServiceError", "VetClient"]

_TIMEOUT = httpx.Timeout(connect=10.0, read=60.0, write=60.0, pool=10.0)
_CHUNK = 256 * 1024


class ServiceError(Exception):
    """The service refused, failed or could not be reached.

    ``transient`` is true for what may work later (network, 5xx): the CLI exits 1 for
    those and 2 for refusals.
    """

    def __init__(self, message: str, *, code: str = "error", status: int | None = None,
                 transient: bool = False, body: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.transient = transient
        self.body = body


class IntegrityError(ServiceError):
    """Downloaded bytes do not match the size or SHA-256 the queue announced."""


def _error_of(reply: httpx.Response, what: str) -> ServiceError:
    body: Any = None
    try:
        body = reply.json()
    except ValueError:
        body = None
    code = body.get("error") if isinstance(body, dict) else None
    detail = body.get("detail") if isinstance(body, dict) else None
    code = code if isinstance(code, str) and code.isascii() and len(code) < 64 else \
        f"http_{reply.status_code}"
    if reply.status_code == 401:
        return ServiceError(f"{what}: the service refused the vetter token ({code}); run"
                            " `vet login` with a valid token", code=code, status=401, body=body)
    text = f"{what}: the service answered {reply.status_code} {code}"
    if isinstance(detail, str) and detail:
        text += f" ({detail[:200]})"
    return ServiceError(text, code=code, status=reply.status_code,
                        transient=reply.status_code >= 500 or reply.status_code == 429,
                        body=body)


class VetClient:
    """One session with the service. Use as a context manager or call :meth:`close`."""

    def __init__(self, server: str, token: str, *,
                 transport: httpx.BaseTransport | None = None,
                 timeout: httpx.Timeout = _TIMEOUT) -> None:
        self.server = server.rstrip("/")
        self._http = httpx.Client(base_url=self.server + "/api/v1", timeout=timeout,
                                  transport=transport, follow_redirects=False,
                                  headers={"Authorization": f"Bearer {token}"})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> VetClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------
    def _request(self, method: str, url: str, what: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, url, **kwargs)
        except httpx.TimeoutException:
            raise ServiceError(f"{what}: the service did not answer in time (network)",
                               code="network", transient=True) from None
        except httpx.TransportError as exc:
            raise ServiceError(f"{what}: cannot reach {self.server} (network:"
                               f" {type(exc).__name__})", code="network",
                               transient=True) from None

    def _json(self, reply: httpx.Response, what: str) -> Any:
        try:
            return reply.json()
        except ValueError:
            raise ServiceError(f"{what}: the service's reply is not JSON",
                               code="bad_reply", status=reply.status_code) from None

    # -- queue and decisions -------------------------------------------------------------
    def queue(self, state: str | None = None) -> list[dict[str, Any]]:
        """The queue's entries (``id``, ``state``, ``received_at``, ``parts``...)."""
        params = {"state": state} if state else None
        reply = self._request("GET", "/queue", "listing the queue", params=params)
        if reply.status_code != 200:
            raise _error_of(reply, "listing the queue")
        doc = self._json(reply, "listing the queue")
        entries = doc.get("submissions") if isinstance(doc, dict) else None
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ServiceError("listing the queue: the reply has no submissions list",
                               code="bad_reply")
        return entries

    def set_state(self, submission_id: str, state: str, *, reason: str | None = None,
                  story_id: str | None = None) -> dict[str, Any]:
        what = f"recording {state} for {submission_id}"
        reply = self._request("POST", f"/submissions/{submission_id}/state", what,
                              json={"state": state, "reason": reason, "story_id": story_id})
        if reply.status_code != 200:
            raise _error_of(reply, what)
        doc = self._json(reply, what)
        return doc if isinstance(doc, dict) else {}

    # -- parts ---------------------------------------------------------------------------
    def fetch_part(self, submission_id: str, name: str, dest: Path, *, size: int,
                   sha256: str, progress: Callable[[int], None] | None = None) -> int:
        """Complete ``dest`` to the part's ``size`` bytes; return the bytes fetched now.

        What ``dest`` holds is kept and the rest is asked for with a Range (resume). The
        whole file's SHA-256 is then checked: on a mismatch the file is deleted and
        :class:`IntegrityError` raised (the next pull starts that part again).
        """
        what = f"fetching {submission_id}/{name}"
        digest = hashlib.sha256()
        have = 0
        if dest.exists():
            have = dest.stat().st_size
            if have > size:
                dest.unlink()
                have = 0
            else:
                with dest.open("rb") as f:
                    for block in iter(lambda: f.read(1024 * 1024), b""):
                        digest.update(block)
        fetched = 0
        if have < size:
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                with self._http.stream("GET", f"/submissions/{submission_id}/parts/{name}",
                                       headers=headers) as reply:
                    if reply.status_code not in (200, 206):
                        reply.read()
                        raise _error_of(reply, what)
                    if reply.status_code == 200 and have:
                        # The service ignored the Range: start the file again.
                        have = 0
                        digest = hashlib.sha256()
                    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if have else os.O_TRUNC)
                    fd = os.open(dest, flags, 0o600)
                    with os.fdopen(fd, "ab" if have else "wb") as out:
                        for block in reply.iter_bytes(_CHUNK):
                            if have + fetched + len(block) > size:
                                raise IntegrityError(
                                    f"{what}: the service sent more than the queue's"
                                    f" {size} bytes", code="size_mismatch")
                            out.write(block)
                            digest.update(block)
                            fetched += len(block)
                            if progress is not None:
                                progress(len(block))
                        out.flush()
                        os.fsync(out.fileno())
            except httpx.TimeoutException:
                raise ServiceError(f"{what}: the service stopped answering (network); run"
                                   " `vet pull` again to resume", code="network",
                                   transient=True) from None
            except httpx.TransportError as exc:
                raise ServiceError(f"{what}: the connection failed ({type(exc).__name__});"
                                   " run `vet pull` again to resume", code="network",
                                   transient=True) from None
            except IntegrityError:
                dest.unlink(missing_ok=True)
                raise
        if have + fetched != size:
            raise ServiceError(f"{what}: got {have + fetched} of {size} bytes; run `vet pull`"
                               " again to resume", code="short_read", transient=True)
        if digest.hexdigest() != sha256:
            dest.unlink(missing_ok=True)
            raise IntegrityError(f"{what}: SHA-256 does not match the queue's; the part was"
                                 " deleted and nothing was marked complete",
                                 code="checksum_mismatch")
        return fetched

    # -- publishing ----------------------------------------------------------------------
    def put_story_audio(self, story_id: str, data: bytes) -> None:
        what = f"uploading the audio of {story_id}"
        reply = self._request("PUT", f"/stories/{story_id}.ogg", what, content=data,
                              headers={"Content-Type": "audio/ogg",
                                       "X-Content-SHA256": hashlib.sha256(data).hexdigest()})
        if reply.status_code not in (200, 201, 204):
            raise _error_of(reply, what)

    def get_catalog(self) -> tuple[bytes, str] | None:
        """The service's current catalog and its signature; None if it has none."""
        reply = self._request("GET", "/catalog", "fetching the catalog")
        if reply.status_code == 404:
            return None
        if reply.status_code != 200:
            raise _error_of(reply, "fetching the catalog")
        data = reply.content
        sig = self._request("GET", "/catalog.sig", "fetching the catalog signature")
        if sig.status_code != 200:
            raise _error_of(sig, "fetching the catalog signature")
        return data, sig.text

    def put_catalog(self, data: bytes, signature: str) -> int:
        what = "uploading the catalog"
        reply = self._request("PUT", "/catalog", what,
                              json={"catalog": data.decode("utf-8"), "signature": signature})
        if reply.status_code not in (200, 201):
            raise _error_of(reply, what)
        doc = self._json(reply, what)
        version = doc.get("version") if isinstance(doc, dict) else None
        return version if isinstance(version, int) else -1
