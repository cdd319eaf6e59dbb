"""``vet serve``: unlock the keys once, bind 127.0.0.1, print the login link, serve.

The passphrase comes from ``VET_PASSPHRASE`` or the terminal (getpass); the team's
identity and the publishing key stay unlocked in this process's memory until it
exits. The login link is printed once, on stdout, as the last line before serving::

    vet serve: open http://127.0.0.1:PORT/#token=...

No access log: the paths hold submission ids, and nothing needs them on a screen.
"""

from __future__ import annotations

import getpass
import os
import socket
import sys
from pathlib import Path
from typing import Any, TextIO

from sync.vet.session import Vet, VetError

from .app import create_app
from .backend import VetBackend
from .security import Gate

DEFAULT_PORT = 8765


class ServeError(VetError):
    """Cannot start: the message says why (exit 2, as every VetError)."""


def read_passphrase(prompt: str = "Passphrase for the team's keys: ") -> str:
    passphrase = os.environ.get("VET_PASSPHRASE")
    if passphrase:
        return passphrase
    if not sys.stdin.isatty():
        raise ServeError("no passphrase: set VET_PASSPHRASE or run on a terminal")
    return getpass.getpass(prompt)


def unlock(vet: Vet) -> None:
    """Unlock the team's identity (and the publishing key, when the home has one) now:
    a wrong passphrase stops the start, not the first click."""
    vet.team_identities()
    if vet.home.publisher_key.exists():
        vet.signing_key()


def bind(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1 only (port 0: any free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


def serve_vet(vet: Vet, *, port: int = DEFAULT_PORT, out: TextIO | None = None) -> int:
    """``vet serve`` for a :class:`Vet` the CLI made: unlock, bind, print, serve.

    Raises :class:`VetError` (keys, port) before anything listens.
    """
    import uvicorn

    out = out or sys.stdout
    if not 0 <= port <= 65535:
        raise ServeError("--port must be 0..65535")
    unlock(vet)
    sock = bind(port)
    gate = Gate(port=int(sock.getsockname()[1]))
    app = create_app(VetBackend(vet), gate)
    config = uvicorn.Config(app, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=3, server_header=False)
    server = uvicorn.Server(config)
    print(f"vet serve: open {gate.login_url()}", file=out, flush=True)
    print("vet serve: local only (127.0.0.1); Ctrl-C stops it and forgets the keys.",
          file=out, flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0


def serve(home_dir: str | os.PathLike[str] | None, *, port: int = DEFAULT_PORT,
          out: TextIO | None = None) -> int:
    """Standalone: the home from ``--home``/``VET_HOME``, the passphrase from
    ``VET_PASSPHRASE`` or the terminal."""
    from sync.vet.workspace import Home

    return serve_vet(Vet(Home.from_env(home_dir), passphrase=read_passphrase), port=port,
                     out=out)


def main(argv: list[str] | None = None) -> int:
    """``python -m sync.vet.web [--home DIR] [--port P]`` (what ``vet serve`` runs)."""
    import argparse

    parser = argparse.ArgumentParser(prog="vet serve", description=(
        "The vetting workflow as a local web page on 127.0.0.1: the queue, the decrypted"
        " manifest, a player, decisions and publishing. Prints a login link once."))
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args)


def add_arguments(parser: Any) -> None:
    """``--home`` and ``--port``, for the ``vet`` CLI's ``serve`` subcommand too."""
    if not any("--home" in a.option_strings for a in parser._actions):
        parser.add_argument("--home", type=Path, default=None,
                            help="the vet home folder (default: $VET_HOME or"
                                 " ~/.local/share/idr-vet)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port on 127.0.0.1 (default {DEFAULT_PORT}; 0: any free port)")


def run(args: Any) -> int:
    """Entry point for an argparse namespace with ``home`` and ``port``."""
    try:
        return serve(args.home, port=args.port)
    except VetError as exc:
        print(f"vet serve: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
