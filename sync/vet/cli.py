"""The ``vet`` command. Its verbs arrive with the vetting issue."""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="vet",
        description="I Defend Rights vetting tool: pull sealed submissions, decrypt them"
                    " on this workstation, listen, approve or reject, publish.",
        epilog="No commands yet: they are built with the vetting issue.")


def main(argv: list[str] | None = None) -> int:
    _parser().parse_args(argv)
    _parser().print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
