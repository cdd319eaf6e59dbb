"""What staff see about the kiosk's state (the staff screen shows the same figures)."""

from __future__ import annotations

from datetime import UTC, datetime

from sync.envelope import parse_recipient


def sealing_status(recipients: tuple[str, ...]) -> dict[str, object]:
    """Whom new recordings are sealed to, and whether that resists a quantum adversary.

    The config has already validated every recipient, so parsing cannot fail here.
    """
    parsed = [parse_recipient(r) for r in recipients]
    post_quantum = bool(parsed) and all(r.post_quantum for r in parsed)
    if not parsed:
        summary = "no recipients: recording is disabled until a catalog or the config names them"
    elif post_quantum:
        summary = f"{len(parsed)} recipient(s), all post-quantum (mlkem768x25519)"
    else:
        classic = sum(not r.post_quantum for r in parsed)
        summary = (f"{len(parsed)} recipient(s), NOT post-quantum: {classic} classic X25519"
                   " key(s); recordings could be opened by a future quantum computer")
    return {"recipients": len(parsed), "post_quantum": post_quantum, "summary": summary}


def human_bytes(size: int | None) -> str:
    """``123.4 MB``-style sizes for staff (powers of 1000, as disk makers count)."""
    if size is None:
        return "unknown"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def when(timestamp: float | str | None, *, never: str = "never") -> str:
    """A wall-clock time as staff read it: ``2026-11-28 14:03 UTC``; ``never`` for None.

    A string (an ISO time written by another part of the kiosk) is shown as it is.
    """
    if timestamp is None:
        return never
    if isinstance(timestamp, str):
        return timestamp
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def submissions_summary(by_state: dict[str, int]) -> str:
    """``3 submitted, 1 open`` (every state the store holds, largest first); ``none``."""
    parts = [f"{n} {state}" for state, n in sorted(by_state.items(),
                                                    key=lambda kv: (-kv[1], kv[0])) if n]
    return ", ".join(parts) if parts else "none"
