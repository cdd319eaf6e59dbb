"""The ``central`` command: init, serve, enrol-code, devices, revoke, vetter add, admin add,
audit verify, set-publisher-key, status, backup, restore, migrate.

A command that makes a code or a token prints it alone on the last line, so scripts can
take ``tail -n 1``. Errors go to stderr with exit code 2. Nothing here logs a secret.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from sync.signing import VerifyKey

from .core import (
    DEFAULT_MAX_UPLOAD,
    Central,
    NotInitialised,
    Settings,
    hash_secret,
    init,
    make_enrol_code,
    make_vetter_token,
    normalise_code,
    parse_duration,
    parse_publisher_key,
    set_publisher_key,
)
from .storage.audit_chain import first_broken
from .storage.base import AuditEvent, StorageError


class UsageError(Exception):
    pass


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _publisher_key(text: str) -> VerifyKey:
    try:
        return parse_publisher_key(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="central",
                                     description="I Defend Rights central vetting queue.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--data", type=Path, required=True, metavar="DIR")
        return cmd

    init_cmd = add("init", "create a data directory and the service key; print the public"
                           " key last")
    init_cmd.add_argument("--publisher-key", type=_publisher_key, default=None,
                          metavar="KEY", help="the publishing team's idrverify1... key, which"
                                              " every catalog must be signed with")
    pub = add("set-publisher-key", "pin (or change) the publishing team's verify key")
    pub.add_argument("key", type=_publisher_key, metavar="KEY", help="idrverify1...")
    add("migrate", "apply the pending schema migrations to the configured store (run it"
                   " before starting a new version's instances on PostgreSQL); print the"
                   " revisions before and after")
    add("status", "the service key, the publishing key and counts")
    serve = add("serve", "run the HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--max-upload-bytes", type=int, default=DEFAULT_MAX_UPLOAD,
                       metavar="N")
    serve.add_argument("--upload-expiry", type=_duration, default=7 * 86400.0,
                       metavar="DURATION", help="unfinished uploads expire after (7d)")
    serve.add_argument("--body-idle-timeout", type=float, default=60.0, metavar="SECONDS")
    code = add("enrol-code", "make a one-time enrolment code (printed last)")
    code.add_argument("--name", default=None, help="a name for the device, for staff")
    code.add_argument("--expires", type=_duration, default=86400.0, metavar="DURATION",
                      help="30m, 24h (default), 7d")
    add("devices", "list the enrolled devices")
    revoke = add("revoke", "revoke a device's token")
    revoke.add_argument("device")
    vetter = sub.add_parser("vetter", help="vetter accounts")
    vsub = vetter.add_subparsers(dest="vetter_command", required=True)
    vadd = vsub.add_parser("add", help="add a vetter; print the token last")
    vadd.add_argument("--data", type=Path, required=True, metavar="DIR")
    vadd.add_argument("name")
    backup_cmd = add("backup", "copy the data directory into a new folder DIR, while the"
                               " service runs (it holds the service's private key: keep it"
                               " secret)")
    backup_cmd.add_argument("dir", type=Path, metavar="DIR")
    restore_cmd = add("restore", "check the backup DIR and make --data a data directory"
                                 " from it, in the store its configuration names (SQLite"
                                 " and files, or an empty PostgreSQL database and S3"
                                 " bucket); stop the service first")
    restore_cmd.add_argument("dir", type=Path, metavar="DIR")
    restore_cmd.add_argument("--force", action="store_true",
                             help="--data is not empty: rename it aside, then restore (a"
                                  " PostgreSQL database or S3 bucket holding data is"
                                  " refused even so)")
    admin = sub.add_parser("admin", help="administrator tokens (the fleet view)")
    admsub = admin.add_subparsers(dest="admin_command", required=True)
    adm_add = admsub.add_parser("add", help="add an administrator; print the token last")
    adm_add.add_argument("--data", type=Path, required=True, metavar="DIR")
    adm_add.add_argument("name")
    adm_revoke = admsub.add_parser("revoke", help="revoke an administrator's token")
    adm_revoke.add_argument("--data", type=Path, required=True, metavar="DIR")
    adm_revoke.add_argument("admin_id", metavar="ID")
    audit = sub.add_parser("audit", help="the audit log")
    asub = audit.add_subparsers(dest="audit_command", required=True)
    verify = asub.add_parser("verify", help="check the audit log's hash chain")
    verify.add_argument("--data", type=Path, required=True, metavar="DIR")
    usb = add("import", "take the USB bundles in DIR (kiosk export): store their"
                        " submissions with the network's checks, write receipts back")
    usb.add_argument("dir", type=Path, metavar="DIR")
    usb.add_argument("--catalog", action="store_true",
                     help="also write the current signed catalog and its audio to DIR")
    cat = add("export-catalog", "write the current signed catalog and its story audio to"
                                " DIR, for kiosks without a network (kiosk import)")
    cat.add_argument("dir", type=Path, metavar="DIR")
    return parser


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cmd_enrol_code(central: Central, args: argparse.Namespace) -> int:
    code = make_enrol_code()
    normalised = normalise_code(code)
    assert normalised is not None
    now = time.time()
    central.meta.add_enrol_code(hash_secret(normalised), args.name, now, now + args.expires,
                                audit=AuditEvent("cli", "enrol_code_made", "code"))
    print(f"enrolment code, valid until {_when(now + args.expires)}, works once:")
    print(code)
    return 0


def _cmd_devices(central: Central) -> int:
    header = ("id", "name", "enrolled", "revoked", "last heartbeat", "queue", "free disk",
              "version", "last error")
    rows = [header]
    for d in central.meta.list_devices():
        rows.append((d.id, d.name or "-", _when(d.enrolled_at), _when(d.revoked_at),
                     _when(d.last_heartbeat_at),
                     "-" if d.queue_depth is None else str(d.queue_depth),
                     "-" if d.free_disk_bytes is None else str(d.free_disk_bytes),
                     d.app_version or "-", d.last_error or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _cmd_backup_restore(args: argparse.Namespace) -> int:
    from .backup import BackupError, backup, restore

    try:
        if args.command == "backup":
            done = backup(args.data, args.dir)
            counts = " ".join(f"{k}={v}" for k, v in sorted(done.counts.items()))
            print(f"backup written: {done.files} files, {done.bytes} bytes"
                  + (f" ({counts})" if counts else ""))
            print("it holds the service's private key: keep it as secret as the service")
            print(done.path)
            return 0
        done = restore(args.dir, args.data, force=args.force)
    except BackupError as exc:
        raise UsageError(str(exc)) from None
    except StorageError as exc:
        # S3 or PostgreSQL failed mid-way (the messages name keys, never secrets).
        raise UsageError(f"{args.command} stopped: the store failed"
                         f" ({type(exc).__name__}: {exc})") from None
    if done.replaced is not None:
        print(f"the folder that was there is kept as {done.replaced}")
    where = "" if done.store == "sqlite+files" else f" ({done.store}, as configured)"
    print(f"restored {done.files} files into {done.path}{where}; audit chain intact:"
          f" {done.audit_entries} entries")
    print("service public key (compare with the one the kiosks pinned):")
    print(done.service_key)
    return 0


def _cmd_admin(central: Central, args: argparse.Namespace) -> int:
    from .api.fleet import make_admin_token

    if args.admin_command == "revoke":
        if not central.meta.revoke_admin(args.admin_id, time.time(),
                                         audit=AuditEvent("cli", "admin_revoked",
                                                          args.admin_id)):
            raise UsageError(f"no administrator {args.admin_id!r}")
        print(f"administrator {args.admin_id} revoked")
        return 0
    name = args.name.strip()
    if not name or len(name) > 100:
        raise UsageError("an administrator name is 1 to 100 characters")
    token = make_admin_token()
    admin_id = "adm-" + secrets.token_hex(8)
    central.meta.add_admin(admin_id, name, hash_secret(token), time.time(),
                           audit=AuditEvent("cli", "admin_added", admin_id))
    print(f"administrator {admin_id} added; the token is shown once:")
    print(token)
    return 0


def _cmd_audit_verify(central: Central) -> int:
    rows = list(central.meta.audit_rows())
    count, broken = first_broken(rows)
    if broken is None:
        head = central.meta.get_meta("audit_head")
        last = f"{rows[-1].seq}:{rows[-1].hash}" if rows else None
        if head != last:
            # The chain is consistent but shorter than it was: newest entries dropped.
            seq = rows[-1].seq + 1 if rows else 1
            print(f"audit chain broken at seq {seq}: entries missing at the end")
            return 1
        print(f"audit chain intact: {count} entries")
        return 0
    print(f"audit chain broken at seq {broken}")
    return 1


def _cmd_status(central: Central) -> int:
    from collections import Counter

    states = Counter(s.state for s in central.meta.list_submissions())
    catalog = central.meta.latest_catalog(with_data=False)
    publisher = central.publisher_key()
    print(f"service key: {central.key.verify_key}")
    print(f"publishing key: {publisher if publisher is not None else '-'}")
    print(f"devices: {len(central.meta.list_devices())}")
    print("submissions: " + (" ".join(f"{k}={v}" for k, v in sorted(states.items())) or "0"))
    print(f"catalog version: {catalog.version if catalog is not None else '-'}")
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.command == "init":
        key = init(args.data, publisher_key=args.publisher_key)
        print(f"central: data directory ready at {args.data}")
        if args.publisher_key is not None:
            print(f"publishing key pinned: {args.publisher_key}")
        print("service public key (kiosks pin it at enrolment):")
        print(key)
        return 0
    if args.command == "serve":
        from .server import serve

        settings = Settings(max_upload_bytes=args.max_upload_bytes,
                            upload_expiry=args.upload_expiry,
                            body_idle_timeout=args.body_idle_timeout)
        if args.max_upload_bytes < 1:
            raise UsageError("--max-upload-bytes must be at least 1")
        return serve(args.data, settings, host=args.host, port=args.port)
    if args.command == "migrate":
        # Imported here: alembic and SQLAlchemy load only when the schema changes.
        from .schema import migrate

        print(f"central: {migrate(args.data).describe()}")
        return 0
    if args.command in ("backup", "restore"):
        return _cmd_backup_restore(args)
    central = Central(args.data)
    try:
        if args.command == "admin":
            return _cmd_admin(central, args)
        if args.command in ("import", "export-catalog"):
            from .usb_import import cli_command

            return cli_command(central, args)
        if args.command == "enrol-code":
            return _cmd_enrol_code(central, args)
        if args.command == "devices":
            return _cmd_devices(central)
        if args.command == "revoke":
            if not central.meta.revoke_device(args.device, time.time(),
                                              audit=AuditEvent("cli", "device_revoked",
                                                               args.device)):
                raise UsageError(f"no device {args.device!r}")
            print(f"device {args.device} revoked")
            return 0
        if args.command == "vetter":
            name = args.name.strip()
            if not name or len(name) > 100:
                raise UsageError("a vetter name is 1 to 100 characters")
            token = make_vetter_token()
            vetter_id = "vet-" + secrets.token_hex(8)
            central.meta.add_vetter(vetter_id, name, hash_secret(token), time.time(),
                                    audit=AuditEvent("cli", "vetter_added", vetter_id))
            print(f"vetter {vetter_id} added; the token is shown once:")
            print(token)
            return 0
        if args.command == "audit":
            return _cmd_audit_verify(central)
        if args.command == "set-publisher-key":
            set_publisher_key(central.meta, args.key)
            print("publishing key pinned; catalogs must now be signed with:")
            print(args.key)
            return 0
        if args.command == "status":
            return _cmd_status(central)
    finally:
        central.close()
    raise UsageError(f"unknown command {args.command}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (NotInitialised, UsageError) as exc:
        print(f"central: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"central: {exc.strerror or exc} ({getattr(exc, 'filename', '')})",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
