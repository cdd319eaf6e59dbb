"""The ``central`` command: ``init --data DIR`` and ``serve --data DIR``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import store


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="central",
                                     description="I Defend Rights central vetting queue.")
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="create a data directory")
    init.add_argument("--data", type=Path, required=True, metavar="DIR")
    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--data", type=Path, required=True, metavar="DIR")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "init":
        db = store.init(args.data)
        print(f"central: data directory ready at {args.data} ({db.name})")
        return 0
    import uvicorn

    from .app import create_app

    try:
        app = create_app(args.data)
    except store.StoreError as exc:
        print(f"central: {exc}", file=sys.stderr)
        return 2
    # Access logs name paths only; request bodies (ciphertext) are never logged.
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
