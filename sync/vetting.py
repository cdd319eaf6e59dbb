"""Review states, the moves between them, and the reason codes: both ends import this.

The service (sync/central/api/review.py) enforces the moves; the vetting tool
(sync/vet/) offers the same reasons and asks for legal moves only, so the two cannot
disagree about what "rejected for risk to others" is called::

    received -> in_review -> approved -> published -> unpublished -> published ...
    received | in_review | approved -> rejected          (with a reject reason)
    any state but withdrawn -> withdrawn                  (only by the receipt code)

``published`` carries the catalog's ``story_id``; ``unpublished`` and ``withdrawn``
keep it, so that the team knows which story the next catalog must leave out.
Reason codes are machine words: the note a vetter writes stays on the workstation.
"""

from __future__ import annotations

import re
from typing import Final

RECEIVED: Final = "received"
IN_REVIEW: Final = "in_review"
APPROVED: Final = "approved"
PUBLISHED: Final = "published"
UNPUBLISHED: Final = "unpublished"
REJECTED: Final = "rejected"
WITHDRAWN: Final = "withdrawn"
STATES: Final = (RECEIVED, IN_REVIEW, APPROVED, PUBLISHED, UNPUBLISHED, REJECTED, WITHDRAWN)

#: The seed's reasons for declining a submission.
RISK_TO_DEFENDER: Final = "risk_to_defender"
RISK_TO_OTHERS: Final = "risk_to_others"
VULGAR_OR_INAPPROPRIATE: Final = "vulgar_or_inappropriate"
UNTRUE_OR_DECEPTIVE: Final = "untrue_or_deceptive"
NAMES_OTHERS_WITHOUT_PERMISSION: Final = "names_others_without_permission"
AGAINST_UNIVERSAL_RIGHTS: Final = "against_universal_rights"
OTHER: Final = "other"
REJECT_REASONS: Final = (RISK_TO_DEFENDER, RISK_TO_OTHERS, VULGAR_OR_INAPPROPRIATE,
                         UNTRUE_OR_DECEPTIVE, NAMES_OTHERS_WITHOUT_PERMISSION,
                         AGAINST_UNIVERSAL_RIGHTS, OTHER)
#: Approval has one reason today; a code keeps the record's shape the same both ways.
VETTED: Final = "vetted"
APPROVE_REASONS: Final = (VETTED,)
DEFAULT_APPROVE_REASON: Final = VETTED

#: What a vetter may move a submission to, from each state. ``withdrawn`` is absent on
#: purpose: only the defender's receipt code (POST /withdraw) leads there.
VETTER_MOVES: Final[dict[str, frozenset[str]]] = {
    RECEIVED: frozenset({IN_REVIEW, REJECTED}),
    IN_REVIEW: frozenset({APPROVED, REJECTED}),
    APPROVED: frozenset({PUBLISHED, REJECTED}),
    PUBLISHED: frozenset({UNPUBLISHED}),
    UNPUBLISHED: frozenset({PUBLISHED}),
    REJECTED: frozenset(),
    WITHDRAWN: frozenset(),
}
#: States the receipt code can withdraw from (all but withdrawn itself).
WITHDRAWABLE: Final = tuple(s for s in STATES if s != WITHDRAWN)

#: A catalog story id (sync/catalog.py): it names a file on every kiosk.
_STORY_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class IllegalTransition(ValueError):
    """A move the review states do not allow."""


class BadReason(ValueError):
    """A reason code that does not fit the move (unknown, missing or not allowed)."""


def is_state(text: object) -> bool:
    return isinstance(text, str) and text in STATES


def is_story_id(text: object) -> bool:
    return isinstance(text, str) and _STORY_ID.fullmatch(text) is not None


def can_move(current: str, target: str) -> bool:
    """Whether a vetter may move a submission from ``current`` to ``target``."""
    return target in VETTER_MOVES.get(current, frozenset())


def check_move(current: str, target: str) -> None:
    if not is_state(target):
        raise IllegalTransition(f"{target!r} is not a review state")
    if not can_move(current, target):
        raise IllegalTransition(f"a submission that is {current} cannot become {target}")


def reason_for(target: str, reason: str | None) -> str | None:
    """The reason code to record for a move to ``target`` (BadReason if it does not fit).

    ``rejected`` needs one of :data:`REJECT_REASONS`; ``approved`` takes one of
    :data:`APPROVE_REASONS` (``vetted`` when none is given); other moves take none and
    return None (the record keeps the reason of the last decision).
    """
    if target == REJECTED:
        if reason not in REJECT_REASONS:
            raise BadReason("a rejection needs one of: " + ", ".join(REJECT_REASONS))
        return reason
    if target == APPROVED:
        if reason is None:
            return DEFAULT_APPROVE_REASON
        if reason not in APPROVE_REASONS:
            raise BadReason("an approval's reason is one of: " + ", ".join(APPROVE_REASONS))
        return reason
    if reason is not None:
        raise BadReason(f"a move to {target} takes no reason")
    return None


def path_to(current: str, target: str) -> list[str]:
    """The shortest list of vetter moves from ``current`` to ``target`` ([] if there).

    For the vetting tool: ``vet decide ID approve`` on a ``received`` submission posts
    ``in_review`` then ``approved``. IllegalTransition if no path exists.
    """
    if current == target:
        return []
    seen = {current}
    frontier: list[tuple[str, list[str]]] = [(current, [])]
    while frontier:
        state, steps = frontier.pop(0)
        for nxt in sorted(VETTER_MOVES.get(state, frozenset())):
            if nxt in seen:
                continue
            if nxt == target:
                return [*steps, nxt]
            seen.add(nxt)
            frontier.append((nxt, [*steps, nxt]))
    raise IllegalTransition(f"a submission that is {current} cannot become {target}")


__all__ = [
    "APPROVED", "APPROVE_REASONS", "DEFAULT_APPROVE_REASON", "IN_REVIEW", "PUBLISHED",
    "RECEIVED", "REJECTED", "REJECT_REASONS", "STATES", "UNPUBLISHED", "VETTED",
    "VETTER_MOVES", "WITHDRAWABLE", "WITHDRAWN", "BadReason", "IllegalTransition",
    "can_move", "check_move", "is_state", "is_story_id", "path_to", "reason_for",
]
