"""The ``vet`` command: pull sealed submissions, decrypt them here, decide, publish.

Every command takes ``--home DIR`` (or ``VET_HOME``). The passphrase of the keys comes
from ``VET_PASSPHRASE`` or is asked on the terminal. Exit status: 0 done; 2 refused
(a user error, a wrong passphrase, an unknown id, a tampered download; one line on
stderr); 1 the service could not be reached or failed (try again later). Never a
traceback: an unexpected error is one line too (its type, never its data).

Output lines that scripts read are ``key: value`` lines, printed last:
``vet keygen`` -> ``recipient:``, ``escrow:``, ``publisher:``; ``vet publish`` ->
``story:``, ``catalog:``; ``vet pull`` -> ``pulled N submissions (M bytes)``.
"""

from __future__ import annotations

import argparse
import getpass
import io
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import httpx

from sync import vetting
from sync.envelope.mlkem import MlkemIdentity
from sync.signing import SigningKey

from . import keys
from .client import ServiceError, VetClient
from .publish import (
    PublishOptions,
    publish,
    publish_catalog,
    set_prompts,
    set_recipients,
    unpublish,
)
from .session import Vet, VetError
from .workspace import Home, WorkspaceError

EXIT_OK = 0
EXIT_SERVICE = 1
EXIT_REFUSED = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit 2 (not the usage block)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise VetError(f"{self.prog}: {message}")


def _parser() -> argparse.ArgumentParser:
    home_help = "the vet home folder (default: $VET_HOME or ~/.local/share/idr-vet)"
    # The subcommands take --home too; SUPPRESS keeps one given before the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", default=argparse.SUPPRESS, help=home_help)
    parser = _Parser(
        prog="vet",
        description="I Defend Rights vetting tool: pull sealed submissions, decrypt them"
                    " on this workstation, listen, approve or reject, publish.",
        epilog="The passphrase comes from $VET_PASSPHRASE or is asked on the terminal."
               " Exit status: 0 done, 2 refused (one line on stderr), 1 the service failed.")
    parser.add_argument("--home", default=None, help=home_help)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("keygen", parents=[common],
                       help="make the team, escrow and publishing keys",
                       description="Make the team's post-quantum identity, an escrow"
                       " identity (printed once, armored and passphrase-protected; not"
                       " kept) and the Ed25519 publishing key. The escrow passphrase is"
                       " $VET_ESCROW_PASSPHRASE, else asked (Enter: the same), else the"
                       " same as the keys'.")
    p.add_argument("--force", action="store_true", help="replace existing keys")
    p.add_argument("--work-factor", type=int, default=keys.DEFAULT_WORK_FACTOR,
                   help="scrypt log2(N) of the passphrase files (default %(default)s, as"
                        " age -p; lower only for tests)")

    p = sub.add_parser("login", parents=[common], help="store the service address and token")
    p.add_argument("--server", required=True, help="the central service, e.g. https://...")
    p.add_argument("--token", required=True, help="a vetter token (idrvet_...)")

    sub.add_parser("pull", parents=[common], help="download the sealed submissions")

    p = sub.add_parser("list", parents=[common], help="the queue with states and story ids")
    p.add_argument("--state", choices=vetting.STATES)
    p.add_argument("--json", action="store_true", help="a JSON list")

    p = sub.add_parser("show", parents=[common], help="the decrypted manifest")
    p.add_argument("id")

    p = sub.add_parser("play", parents=[common], help="play (or export) the audio")
    p.add_argument("id")
    p.add_argument("part", nargs="?", help="a part number (1, 2...) or name; default all")
    p.add_argument("--out", type=Path,
                   help="write the decrypted Ogg/Opus to FILE instead (plaintext on disk!)")

    p = sub.add_parser("decide", parents=[common], help="approve or reject with a reason")
    p.add_argument("id")
    p.add_argument("decision", choices=("approve", "reject"))
    p.add_argument("--reason", help="reject: " + ", ".join(vetting.REJECT_REASONS)
                   + "; approve: " + ", ".join(vetting.APPROVE_REASONS) + " (default)")
    p.add_argument("--note", help="a note kept on this workstation only")

    p = sub.add_parser("publish", parents=[common],
                       help="publish a story and a new signed catalog")
    p.add_argument("id")
    p.add_argument("--title")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--display-name", help="only if the defender consented to naming")
    who.add_argument("--anonymous", action="store_true", help='publish as "Anonymous"')
    p.add_argument("--trim", action="append", default=[], metavar="PART:START-END",
                   help="keep START to END seconds of a part (number or name); repeatable")
    p.add_argument("--disguise-voice", action="store_true")
    p.add_argument("--disguise-amount", type=float, help="the disguise's strength")
    p.add_argument("--transcript", type=Path, help="a UTF-8 text file")
    p.add_argument("--region")
    p.add_argument("--theme", action="append", default=[])
    p.add_argument("--language", help="ISO 639 code of the spoken language")
    p.add_argument("--country", help="ISO 3166 alpha-2 code")

    p = sub.add_parser("unpublish", parents=[common], help="take a story down")
    p.add_argument("story")

    p = sub.add_parser("set-recipients", parents=[common],
                       help="the recipients kiosks seal to, from the next catalog on")
    p.add_argument("recipients", nargs="+", metavar="RECIPIENT")
    p.add_argument("--allow-classic", action="store_true",
                   help="accept classic X25519 (age1...) recipients")
    p.add_argument("--publish-now", action="store_true",
                   help="sign and upload a new catalog version at once")

    p = sub.add_parser("set-prompts", parents=[common],
                       help="the prompt ids defenders are asked, from the next catalog on")
    p.add_argument("prompts", nargs="+", metavar="ID")
    p.add_argument("--publish-now", action="store_true",
                   help="sign and upload a new catalog version at once")

    p = sub.add_parser("serve", parents=[common],
                       help="the same workflow as a local web page on 127.0.0.1")
    p.add_argument("--port", type=int, default=8765,
                   help="port on 127.0.0.1 (default %(default)s; 0: any free port)")
    return parser


# ---------------------------------------------------------------------------------------
# passphrases


def _ask(prompt: str) -> str:
    if not sys.stdin.isatty():
        raise VetError("no passphrase: set VET_PASSPHRASE or run in a terminal")
    return getpass.getpass(prompt)


def _passphrase_source() -> Callable[[], str]:
    def get() -> str:
        value = os.environ.get("VET_PASSPHRASE")
        return value if value is not None else _ask("Passphrase of the vet keys: ")
    return get


def _new_passphrase(what: str, env: str, fallback: str | None = None) -> str:
    value = os.environ.get(env)
    if value is not None:
        if not value:
            raise VetError(f"${env} is empty: a passphrase must protect the keys")
        return value
    if fallback is not None and not sys.stdin.isatty():
        return fallback
    first = _ask(f"New passphrase for {what}" + (" (Enter: the same)" if fallback else "")
                 + ": ")
    if not first and fallback is not None:
        return fallback
    if len(first) < 8:
        raise VetError("the passphrase is too short (8 characters at least)")
    if _ask("The same again: ") != first:
        raise VetError("the two passphrases differ")
    return first


# ---------------------------------------------------------------------------------------
# commands


def _keygen(vet: Vet, args: argparse.Namespace, out: TextIO) -> int:
    home = vet.home
    existing = [p for p in (home.team_key, home.publisher_key, home.recipients_path)
                if p.exists()]
    if existing and not args.force:
        raise VetError(f"keys already exist in {home.keys_dir}; --force replaces them (the"
                       " old team key then no longer opens new submissions)")
    if not 10 <= args.work_factor <= keys.MAX_WORK_FACTOR:
        raise VetError(f"--work-factor must be from 10 to {keys.MAX_WORK_FACTOR}")
    passphrase = _new_passphrase("the team and publishing keys", "VET_PASSPHRASE")
    escrow_passphrase = _new_passphrase("the escrow key", "VET_ESCROW_PASSPHRASE",
                                        fallback=passphrase)
    team = MlkemIdentity.generate()
    escrow = MlkemIdentity.generate()
    publisher = SigningKey.generate()
    wf = args.work_factor
    home.ensure()
    escrow_text = keys.escrow_armor(escrow, escrow_passphrase, work_factor=wf)
    keys.write_identity(home.team_key, team, passphrase, work_factor=wf)
    keys.write_signing_key(home.publisher_key, publisher, passphrase, work_factor=wf)
    home.save_recipients([str(team.recipient()), str(escrow.recipient())])
    print("# The ESCROW identity, passphrase-protected. Shown once and not kept: print it",
          file=out)
    print("# or store it offline now. It opens every submission if the team key is lost.",
          file=out)
    out.write(escrow_text if escrow_text.endswith("\n") else escrow_text + "\n")
    print("# Tell the service administrator the publisher key:"
          "  central set-publisher-key --data DIR idrverify1...", file=out)
    print(f"recipient: {team.recipient()}", file=out)
    print(f"escrow: {escrow.recipient()}", file=out)
    print(f"publisher: {publisher.verify_key}", file=out)
    return EXIT_OK


def _login(vet: Vet, args: argparse.Namespace, out: TextIO) -> int:
    server = args.server.strip().rstrip("/")
    if not server.startswith(("http://", "https://")):
        raise VetError("--server must be an http:// or https:// URL")
    token = args.token.strip()
    if not token:
        raise VetError("--token is empty")
    with VetClient(server, token, transport=vet.transport) as client:
        try:
            queue = client.queue()
        except ServiceError as exc:
            if exc.status == 401:
                raise VetError("the service refused the token (not a valid vetter token)") \
                    from None
            raise
    vet.home.save_config(server, token)
    print(f"logged in to {server}: {len(queue)} submissions in the queue", file=out)
    return EXIT_OK


def _pull(vet: Vet, args: argparse.Namespace, out: TextIO) -> int:
    try:
        result = vet.pull()
    except ServiceError as exc:
        partial = getattr(exc, "result", None)
        if partial is not None:
            print(f"pulled {partial.pulled} submissions ({partial.bytes} bytes)", file=out)
        raise
    if result.removed_withdrawn:
        print(f"removed {result.removed_withdrawn} withdrawn submissions", file=out)
    print(f"pulled {result.pulled} submissions ({result.bytes} bytes)", file=out)
    return EXIT_OK


def _rows(vet: Vet, state: str | None, err: TextIO) -> list[dict[str, Any]]:
    try:
        entries = vet.queue()
    except ServiceError as exc:
        if not exc.transient:
            raise
        entries = vet.saved_queue()
        print(f"warning: {exc}; showing the queue as last saved", file=err)
    rows = []
    for e in entries:
        if state and e.get("state") != state:
            continue
        sid = e.get("id")
        if not isinstance(sid, str):
            continue
        rows.append({"id": sid, "state": e.get("state"), "reason": e.get("reason"),
                     "received_at": e.get("received_at"),
                     "parts": len(e.get("parts") or []), "story_id": e.get("story_id"),
                     "pulled": vet.home.is_pulled(sid) if vet.home.root.exists() else False})
    return rows


def _list(vet: Vet, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    rows = _rows(vet, args.state, err)
    if args.json:
        print(json.dumps(rows, indent=2), file=out)
        return EXIT_OK
    print(f"{'ID':36}  {'STATE':11}  {'RECEIVED':20}  PARTS  {'STORY':14}  PULLED", file=out)
    for r in rows:
        print(f"{r['id']:36}  {str(r['state']):11}  {str(r['received_at'])[:20]:20}"
              f"  {r['parts']:5}  {r['story_id'] or '-':14}  {'yes' if r['pulled'] else 'no'}",
              file=out)
    return EXIT_OK


def _show(vet: Vet, args: argparse.Namespace, out: TextIO) -> int:
    manifest = vet.manifest(args.id)
    print(json.dumps(manifest, ensure_ascii=False, indent=2, sort_keys=True), file=out)
    return EXIT_OK


def _play(vet: Vet, args: argparse.Namespace, out: TextIO) -> int:
    names = vet.audio_part_names(args.id)
    if args.out is not None:
        if args.part is None and len(names) != 1:
            raise VetError(f"{args.id} has {len(names)} audio parts: name the one to export"
                           " (vet play ID PART --out FILE)")
        name = vet.resolve_part(args.id, args.part or "1", names)
        data = vet.decrypt(args.id, name)
        try:
            with args.out.open("xb") as f:  # never overwrite: an export is on purpose
                f.write(data)
        except FileExistsError:
            raise VetError(f"{args.out} exists; give a new file name") from None
        except OSError as exc:
            raise VetError(f"cannot write {args.out}: {exc.strerror}") from None
        print(f"exported {name} ({len(data)} bytes, decrypted Ogg/Opus) to {args.out}",
              file=out)
        return EXIT_OK
    try:
        import sounddevice as sd
        import soundfile as sf
    except (ImportError, OSError) as exc:
        raise VetError(f"cannot play here (sounddevice: {exc}); use --out FILE to export")\
            from None
    for name, data in vet.audio(args.id, args.part):
        audio, rate = sf.read(io.BytesIO(data), dtype="float32")
        print(f"playing {name} ({len(audio) / rate:.1f} s)", file=out)
        out.flush()
        try:
            sd.play(audio, rate)
            sd.wait()
        except Exception as exc:  # PortAudioError and friends: no device, busy...
            raise VetError(f"cannot play {name}: {type(exc).__name__}: {exc}") from None
        finally:
            del audio
    return EXIT_OK


def _decide(vet: Vet, args: argparse.Namespace, out: TextIO) -> int:
    reply = vet.decide(args.id, args.decision, reason=args.reason, note=args.note)
    print(f"{args.id}: {reply.get('state')} ({reply.get('reason')})", file=out)
    return EXIT_OK


def _trims(vet: Vet, submission_id: str, texts: Sequence[str]) -> dict[int, tuple[float, float]]:
    if not texts:
        return {}
    names = vet.audio_part_names(submission_id)
    trims: dict[int, tuple[float, float]] = {}
    for text in texts:
        part, sep, span = text.rpartition(":")
        start_text, dash, end_text = span.partition("-")
        try:
            start, end = float(start_text), float(end_text)
        except ValueError:
            raise VetError(f"--trim {text!r}: expected PART:START-END in seconds") from None
        if not sep or not dash or not part or start < 0 or end <= start:
            raise VetError(f"--trim {text!r}: expected PART:START-END with END > START >= 0")
        index = names.index(vet.resolve_part(submission_id, part, names))
        if index in trims:
            raise VetError(f"--trim: part {part} is trimmed twice")
        trims[index] = (start, end)
    return trims


def _publish(vet: Vet, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    transcript = ""
    if args.transcript is not None:
        try:
            transcript = args.transcript.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise VetError(f"cannot read the transcript {args.transcript}: {exc}") from None
    options = PublishOptions(
        title=args.title, display_name=args.display_name, anonymous=args.anonymous,
        trims=_trims(vet, args.id, args.trim), disguise=args.disguise_voice,
        disguise_amount=args.disguise_amount, transcript=transcript, region=args.region,
        themes=tuple(args.theme), language=args.language, country=args.country)
    result = publish(vet, args.id, options, warn=err)
    story = result.story
    assert story is not None
    if result.lufs is not None:
        print(f"audio: {story.duration_s:.1f} s, {story.size} bytes, {result.lufs:.1f} LUFS,"
              f" true peak {result.true_peak_dbtp:.1f} dBTP", file=out)
    if result.dropped_withdrawn:
        print(f"dropped withdrawn: {' '.join(result.dropped_withdrawn)}", file=out)
    print(f"story: {story.id}", file=out)
    print(f"catalog: version {result.version}, {result.stories} stories", file=out)
    return EXIT_OK


def _unpublish(vet: Vet, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    result = unpublish(vet, args.story, warn=err)
    print(f"unpublished: {args.story}", file=out)
    print(f"catalog: version {result.version}, {result.stories} stories", file=out)
    return EXIT_OK


def _set_recipients(vet: Vet, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    set_recipients(vet, list(args.recipients), allow_classic=args.allow_classic)
    print(f"recipients: {len(args.recipients)} stored for the next catalog", file=out)
    if args.publish_now:
        result = publish_catalog(vet, warn=err)
        print(f"catalog: version {result.version}, {result.stories} stories", file=out)
    return EXIT_OK


def _set_prompts(vet: Vet, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    set_prompts(vet, list(args.prompts))
    print(f"prompts: {' '.join(args.prompts)} stored for the next catalog", file=out)
    if args.publish_now:
        result = publish_catalog(vet, warn=err)
        print(f"catalog: version {result.version}, {result.stories} stories", file=out)
    return EXIT_OK


def _serve(vet: Vet, args: argparse.Namespace, out: TextIO) -> int:
    try:
        from .web.server import serve_vet
    except ImportError as exc:
        raise VetError(f"the web page is not available here: {exc}") from None
    return serve_vet(vet, port=args.port, out=out)


def run(argv: Sequence[str] | None = None, *, transport: httpx.BaseTransport | None = None,
        out: TextIO | None = None, err: TextIO | None = None) -> int:
    """The command line, with seams: an HTTP transport and the output streams."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = _parser().parse_args(argv)
        if args.command is None:
            _parser().print_help(out)
            return EXIT_OK
        vet = Vet(Home.from_env(args.home), passphrase=_passphrase_source(),
                  transport=transport)
        command = args.command
        if command == "keygen":
            return _keygen(vet, args, out)
        if command == "login":
            return _login(vet, args, out)
        if command == "pull":
            return _pull(vet, args, out)
        if command == "list":
            return _list(vet, args, out, err)
        if command == "show":
            return _show(vet, args, out)
        if command == "play":
            return _play(vet, args, out)
        if command == "decide":
            return _decide(vet, args, out)
        if command == "publish":
            return _publish(vet, args, out, err)
        if command == "unpublish":
            return _unpublish(vet, args, out, err)
        if command == "set-recipients":
            return _set_recipients(vet, args, out, err)
        if command == "set-prompts":
            return _set_prompts(vet, args, out, err)
        if command == "serve":
            return _serve(vet, args, out)
        raise VetError(f"unknown command {command}")
    except (VetError, WorkspaceError) as exc:
        print(f"vet: {exc}", file=err)
        return EXIT_REFUSED
    except ServiceError as exc:
        print(f"vet: {exc}", file=err)
        return EXIT_SERVICE if exc.transient else EXIT_REFUSED
    except KeyboardInterrupt:
        print("vet: interrupted", file=err)
        return 130
    except OSError as exc:
        print(f"vet: {exc.strerror or type(exc).__name__}"
              + (f": {exc.filename}" if exc.filename else ""), file=err)
        return EXIT_REFUSED
    except SystemExit as exc:  # --help and friends
        return int(exc.code or 0)
    except Exception as exc:
        if os.environ.get("VET_DEBUG"):
            raise
        # Only the type: an exception's text could quote data (VET_DEBUG=1 shows it all).
        print(f"vet: unexpected error ({type(exc).__name__}); VET_DEBUG=1 shows the"
              " details", file=err)
        return EXIT_SERVICE


def main(argv: list[str] | None = None) -> int:
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
