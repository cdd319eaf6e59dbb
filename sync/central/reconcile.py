"""Start-up reconciliation and the expiry sweep: rows against blobs, after any crash.

What a crash can leave, and what is done about it:

* an upload file longer than its committed offset (bytes written, offset not yet moved)
  -> cut back to the offset: those bytes were never acknowledged;
* an upload row without its file -> the file is made again, empty, offset 0 (the kiosk
  asks HEAD and sends from 0); a finished one without its file is dropped;
* an upload file without a row (crash between making the file and the insert) -> deleted;
* a part blob no submission names (crash between making it durable and the insert),
  older than a grace period -> deleted;
* a submission whose part blobs are missing -> a loud log line (code and id only),
  counted: that is data loss, which no automatic step can repair.

Nothing acknowledged (a submission with its receipt) is ever deleted here.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

from .core import CONSUMED_UPLOAD_GRACE, PART_ORPHAN_GRACE, Central

log = logging.getLogger("central")


def reconcile(svc: Central, *, now: float | None = None,
              part_grace: float = PART_ORPHAN_GRACE) -> Counter[str]:
    now = time.time() if now is None else now
    counts: Counter[str] = Counter()
    counts["tmp_removed"] = svc.clear_tmp()
    for temp in [*svc.blobs.stray_part_temps(), *svc.blobs.stray_public_temps()]:
        temp.unlink(missing_ok=True)
        counts["part_temps_removed"] += 1
    for name in svc.blobs.stray_upload_files():
        svc.blobs.remove_stray_upload_file(name)
        counts["stray_files_removed"] += 1

    # Other instances may be serving these uploads right now (the scale-out shape), so
    # each is looked at under its lock, and its row read again under it: an upload being
    # created, PATCHed, terminated or swept is skipped (tus_create holds the new upload's
    # lock from before its blob exists until its row does).
    ids = {u.id for u in svc.meta.list_uploads()} | set(svc.blobs.list_uploads())
    for upload_id in sorted(ids):
        if not svc.meta.try_lock_upload(upload_id):
            counts["uploads_busy"] += 1
            continue
        try:
            _reconcile_upload(svc, upload_id, counts)
        finally:
            svc.meta.unlock_upload(upload_id)

    submissions = svc.meta.list_submissions()
    referenced = {(s.id, p.sha256) for s in submissions for p in s.parts}
    for submission_id, sha256, modified in svc.blobs.list_parts():
        if (submission_id, sha256) not in referenced and now - modified > part_grace:
            svc.blobs.delete_part(submission_id, sha256)
            counts["orphan_parts_removed"] += 1
    for submission in submissions:
        for part in submission.parts:
            if svc.blobs.part_size(submission.id, part.sha256) != part.size:
                log.error("part_missing submission %s", submission.id)
                counts["submissions_missing_parts"] += 1
                break
    counts.update(sweep(svc, now=now))
    log.info("reconcile: %s", " ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "-")
    return counts


def _reconcile_upload(svc: Central, upload_id: str, counts: Counter[str]) -> None:
    upload = svc.meta.get_upload(upload_id)
    size = svc.blobs.upload_size(upload_id)
    if upload is None:
        if size is not None:  # a blob without a row: its creation crashed
            svc.blobs.delete_upload(upload_id)
            counts["upload_files_removed"] += 1
        return
    if size is None or size < upload.offset:
        if upload.finished_at is not None:
            svc.meta.delete_upload(upload.id)
            counts["uploads_dropped"] += 1
            return
        svc.blobs.create_upload(upload.id)
        svc.meta.reset_upload(upload.id)
        counts["uploads_reset"] += 1
        if size is not None:
            log.error("upload_short upload %s", upload.id)
    elif size > upload.offset:
        svc.blobs.truncate_upload(upload.id, upload.offset)
        counts["uploads_truncated"] += 1


def sweep(svc: Central, *, now: float | None = None) -> Counter[str]:
    """Delete expired uploads, and finished ones a stored submission already copied."""
    now = time.time() if now is None else now
    counts: Counter[str] = Counter()
    for upload in svc.meta.list_uploads():
        consumed = (upload.finished_at is not None
                    and now - upload.finished_at > CONSUMED_UPLOAD_GRACE
                    and svc.meta.get_submission(upload.submission_id) is not None)
        if upload.expires_at <= now or consumed:
            if not svc.meta.try_lock_upload(upload.id):
                continue  # a PATCH is running on it; next sweep
            try:
                svc.meta.delete_upload(upload.id)
                svc.blobs.delete_upload(upload.id)
            finally:
                svc.meta.unlock_upload(upload.id)
            counts["uploads_expired" if not consumed else "uploads_consumed"] += 1
    return counts
