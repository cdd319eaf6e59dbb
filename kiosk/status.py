"""What staff see about the kiosk's state (the staff screen shows the same figures)."""

from __future__ import annotations

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
