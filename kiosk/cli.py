"""The ``kiosk`` command: ``run`` (the default), ``walkthrough``, ``status``,
``check-audio`` and ``set-pin``."""

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
    status = sub.add_parser("status", help="what staff need to know about this kiosk")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    check = sub.add_parser("check-audio", help="check the microphone and the speakers")
    check.add_argument("--seconds", type=float, default=3.0,
                       help="how long to record (default 3)")
    check.add_argument("--json", action="store_true", help="print the result as JSON")
    sub.add_parser("demo-stories", help="make, sign and install the demo stories; pins the"
                   " demo publishing key in the config file")
    sub.add_parser("set-pin", help="set the staff PIN (asked twice) in the config file")
    return parser


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
                                     "answers": args.answers, "visitor": args.visitor},
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
    if command == "demo-stories":
        from .stories.demo import run_cli

        return run_cli(cfg)
    from .app import run_app

    return run_app(cfg, screenshot=getattr(args, "screenshot", None),
                   fullscreen=getattr(args, "fullscreen", False))


if __name__ == "__main__":
    sys.exit(main())
