"""The ``kiosk`` command: ``run`` (the default), ``walkthrough``, ``status``,
``check-audio``, ``set-pin``, ``enrol``, ``sync --once`` and ``export``/``import`` (USB)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from . import config as config_mod
from . import logs

log = logging.getLogger("kiosk.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kiosk", description="I Defend Rights exhibit kiosk.")
    parser.add_argument("--config", metavar="PATH",
                        help=f"kiosk TOML config (default: ${config_mod.ENV_VAR}, else demo"
                             " defaults)")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="open the touchscreen app (the default)")
    run.add_argument("--screenshot", metavar="PNG", type=Path,
                     help="save a screenshot of the first screen to PNG, then quit")
    run.add_argument("--fullscreen", action="store_true", help="take the whole screen")
    walk = sub.add_parser("walkthrough",
                          help="drive a whole defender session by itself, with screenshots")
    walk.add_argument("--screenshots", metavar="DIR", type=Path, required=True,
                      help="where to save a PNG of every screen passed")
    walk.add_argument("--lang", metavar="CODE", default=None,
                      help="the session's language (default: the config's first)")
    walk.add_argument("--answer-seconds", type=float, default=4.0,
                      help="how long each answer records (default 4)")
    walk.add_argument("--answers", type=int, default=2,
                      help="questions answered; the rest are skipped (default 2)")
    walk.add_argument("--visitor", action="store_true",
                      help="a visitor instead: browse, filter, play a story to its end, back")
    walk.add_argument("--story", metavar="ID", default=None,
                      help="with --visitor: play this story (default: the first listed)")
    status = sub.add_parser("status", help="what staff need to know about this kiosk")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    check = sub.add_parser("check-audio", help="check the microphone and the speakers")
    check.add_argument("--seconds", type=float, default=3.0,
                       help="how long to record (default 3)")
    check.add_argument("--json", action="store_true", help="print the result as JSON")
    sub.add_parser("demo-stories", help="make, sign and install the demo stories; pins the"
                   " demo publishing key in the config file")
    sub.add_parser("set-pin", help="set the staff PIN (asked twice) in the config file")
    enrol = sub.add_parser("enrol", help="enrol this kiosk with the central service (a"
                           " one-time code from `central enrol-code`)")
    enrol.add_argument("--server", metavar="URL", required=True,
                       help="the central service, e.g. https://vetting.example.org")
    enrol.add_argument("--code", metavar="CODE", required=True, help="the one-time code")
    enrol.add_argument("--force", action="store_true",
                       help="replace this kiosk's existing enrolment")
    sync = sub.add_parser("sync", help="send the sealed submissions to the central service")
    sync.add_argument("--once", action="store_true",
                      help="one pass, then exit (0: nothing pending; 1: something still"
                           " pending or an error; 2: not enrolled, revoked or bad config)")
    usb_export = sub.add_parser("export", help="write the unsent sealed submissions to a USB"
                                " stick (DIR; default: the mounted stick)")
    usb_export.add_argument("dir", metavar="DIR", type=Path, nargs="?", default=None)
    usb_import = sub.add_parser("import", help="take the service's receipts and a signed"
                                " catalog from a USB stick (DIR; default: the mounted stick)")
    usb_import.add_argument("dir", metavar="DIR", type=Path, nargs="?", default=None)
    return parser


def _enrol(cfg: config_mod.KioskConfig, args: argparse.Namespace) -> int:
    from sync.client.enrol import EnrolFailed, EnrolRefused

    from .device import AlreadyEnrolled, enrol_device
    from .sync_runner import timeouts_of
    from .vault.store import Store

    try:
        enrolment = enrol_device(cfg.data_dir, server_url=args.server, code=args.code,
                                 force=args.force, timeouts=timeouts_of(cfg))
    except AlreadyEnrolled:
        print("kiosk enrol: this kiosk is already enrolled; use --force to replace its"
              " enrolment", file=sys.stderr)
        return 2
    except EnrolRefused:
        logs.event(log, "enrol_refused")
        print("kiosk enrol: the central service refused the code (wrong, expired or"
              " already used); ask for a new one", file=sys.stderr)
        return 2
    except EnrolFailed as exc:
        logs.event(log, "enrol_failed", error=exc.code)
        print(f"kiosk enrol: enrolment failed ({exc.code}); is {args.server} the central"
              " service, and reachable?", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"kiosk enrol: {exc}", file=sys.stderr)
        return 2
    # Upload URLs of an earlier enrolment belong to the old device, not this one.
    store = Store.in_data_dir(cfg.data_dir)
    try:
        store.forget_all_upload_urls()
    finally:
        store.close()
    logs.event(log, "enrolled", device=enrolment.device_id)
    print(f"enrolled as {enrolment.device_id} with {enrolment.server_url}")
    print(f"service key pinned: {enrolment.service_key}")
    return 0


class _Bar:
    """A one-line progress bar on a terminal; plain lines (one per submission) else."""

    def __init__(self, stream: object) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._last_done = -1
        self._drawn = False

    def __call__(self, p: object) -> None:
        from .status import human_bytes
        from .sync_runner import SyncProgress

        assert isinstance(p, SyncProgress)
        out = self.stream
        if self.tty:
            if p.phase != "upload" or not p.total:
                return
            width = 30
            share = p.sent_bytes / p.total_bytes if p.total_bytes else 1.0
            filled = int(width * share)
            line = (f"\r[{'#' * filled}{'.' * (width - filled)}] {share:4.0%}"
                    f"  {human_bytes(p.sent_bytes)} of {human_bytes(p.total_bytes)}"
                    f"  submissions {p.done}/{p.total}")
            print(line, end="", file=out, flush=True)  # type: ignore[call-overload]
            self._drawn = True
        elif p.phase == "upload" and p.done != self._last_done and p.total:
            self._last_done = p.done
            print(f"submissions {p.done}/{p.total}, {p.sent_bytes} of {p.total_bytes}"
                  " bytes", file=out, flush=True)  # type: ignore[call-overload]

    def end(self) -> None:
        if self._drawn:
            print(file=self.stream)  # type: ignore[call-overload]


def _sync(cfg: config_mod.KioskConfig, args: argparse.Namespace) -> int:
    from .sync_runner import sync_once
    from .vault.store import Store

    if not args.once:
        print("kiosk sync: only --once is supported here (the app syncs by itself)",
              file=sys.stderr)
        return 2
    store = Store.in_data_dir(cfg.data_dir)
    bar = _Bar(sys.stdout)
    try:
        # sync_once reconciles the outbox with the files first. Not the whole start-up
        # sweep: the app may be running a defender's session right now, and its parts
        # are not ours to judge.
        result = sync_once(cfg, store, progress=bar)
    finally:
        bar.end()
        store.close()
    print(f"acknowledged {result.acknowledged}, pending {result.pending}, rejected"
          f" {result.rejected}, purged {result.purged}, sent {result.sent_bytes} bytes")
    if result.catalog_error is not None:
        # The stories already installed keep playing; staff mode shows the same error.
        print(f"catalog: refused ({result.catalog_error}); the current stories are kept")
    elif result.catalog_version is not None:
        print(f"catalog: version {result.catalog_version}")
    if result.error in ("not_enrolled", "device_broken"):
        print("kiosk sync: this kiosk is not enrolled (or its device files are broken):"
              " run `kiosk enrol --server URL --code CODE`", file=sys.stderr)
        return 2
    if result.revoked:
        print(f"kiosk sync: the central service refused this kiosk's token"
              f" ({result.error}): the device is revoked; its queue is kept. Enrol again"
              " (kiosk enrol --force) or export the queue.", file=sys.stderr)
        return 2
    if result.error is not None:
        retry = (f"; the service asks to retry in {result.retry_after:.0f} s"
                 if result.retry_after is not None else "")
        print(f"kiosk sync: stopped with error {result.error}{retry}", file=sys.stderr)
        return 1
    if result.rejected:
        print(f"kiosk sync: {result.rejected} submission(s) rejected; see `kiosk status`",
              file=sys.stderr)
    return 1 if result.pending else 0


def _check_audio(cfg: config_mod.KioskConfig, args: argparse.Namespace) -> int:
    from .audio.check import as_dict, run_check
    from .audio.devices import AudioDeviceError

    try:
        result = run_check(cfg.audio.input_device, cfg.audio.output_device,
                           record_seconds=args.seconds)
    except AudioDeviceError as exc:
        logs.event(log, "check_audio_failed")
        print(str(exc), file=sys.stderr)
        return 2
    logs.event(log, "check_audio", peak_dbfs=result.peak_dbfs, rms_dbfs=result.rms_dbfs,
               overflows=result.input_overflows)
    if args.json:
        print(json.dumps(as_dict(result)))
    else:
        print(f"Microphone: {result.input_device}")
        print(f"  peak {result.peak_dbfs:.1f} dBFS, RMS {result.rms_dbfs:.1f} dBFS,"
              f" input overflows {result.input_overflows}")
        print(f"Speakers: {result.output_device}: played a {result.tone_hz:.0f} Hz tone"
              f" for {result.tone_seconds:.0f} s")
    return 0


def _status(cfg: config_mod.KioskConfig, args: argparse.Namespace) -> int:
    from .staff.facts import gather
    from .stories import StoryLibrary
    from .vault.store import Store

    # The stories as the kiosk would show them: the same facts as the staff screen.
    library = StoryLibrary(cfg.data_dir, cfg.publisher_key)
    library.load()
    store = Store.in_data_dir(cfg.data_dir)
    try:
        facts = gather(cfg, store=store, library=library)
    finally:
        store.close()
    if args.json:
        print(json.dumps(facts.as_dict()))
        return 0
    for label, value in facts.lines():
        print(f"{label}: {value}")
    return 0


def _walkthrough(cfg: config_mod.KioskConfig, args: argparse.Namespace) -> int:
    from .app import run_app

    language = args.lang or cfg.languages[0]
    if language not in cfg.languages:
        print(f"kiosk: --lang {language} is not one of the config's languages"
              f" ({', '.join(cfg.languages)})", file=sys.stderr)
        return 2
    outcome: dict[str, object] = {}
    code = run_app(cfg, walkthrough={"screenshots": args.screenshots, "language": language,
                                     "answer_s": args.answer_seconds,
                                     "answers": args.answers, "visitor": args.visitor,
                                     "story": args.story},
                   on_done=lambda app: outcome.update(result=app.walkthrough.result))
    result = outcome.get("result")
    if result is None:
        print("kiosk walkthrough: the app stopped before the walkthrough ran", file=sys.stderr)
        return 1
    shots = len(result.screenshots)  # type: ignore[attr-defined]
    if code == 0 and result.ok and args.visitor:  # type: ignore[attr-defined]
        print(f"visitor walkthrough ({language}): played story {result.submission} to its"
              f" end; {shots} screenshots in {args.screenshots}")
        return 0
    if code == 0 and result.ok:  # type: ignore[attr-defined]
        print(f"walkthrough ({language}): submitted {result.submission}; sealed manifest at"
              f" {result.manifest}; {shots} screenshots in {args.screenshots}")
        return 0
    print(f"kiosk walkthrough ({language}) failed: {result.error or 'no submission'}"
          f" ({shots} screenshots in {args.screenshots})", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "set-pin":  # before the config is validated: it may be the fix
        from .staff.pin import set_pin_command

        return set_pin_command(args.config)
    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as exc:
        print(f"kiosk: bad configuration: {exc}", file=sys.stderr)
        return 2
    logs.setup(cfg.data_dir)
    command = args.command or "run"
    if command == "check-audio":
        return _check_audio(cfg, args)
    if command == "status":
        return _status(cfg, args)
    if command == "walkthrough":
        return _walkthrough(cfg, args)
    if command == "enrol":
        return _enrol(cfg, args)
    if command == "sync":
        return _sync(cfg, args)
    if command in ("export", "import"):
        from .usb.commands import export_command, import_command

        return (export_command if command == "export" else import_command)(cfg, args.dir)
    if command == "demo-stories":
        from .stories.demo import run_cli

        return run_cli(cfg)
    from .app import run_app

    return run_app(cfg, screenshot=getattr(args, "screenshot", None),
                   fullscreen=getattr(args, "fullscreen", False))


if __name__ == "__main__":
    sys.exit(main())
