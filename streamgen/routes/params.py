"""Reading the query and header parameters of the event routes: where to resume
(`Last-Event-ID`, ``from_seq``) and which byte forms a segment event carries (``payload``)."""

from __future__ import annotations

from streamgen.broker.base import MAX_SEQ
from streamgen.errors import InvalidParameter

_MAX_DIGITS = 64

# What a text subscriber may ask for in segment events (`?payload=`): both forms, only the
# continuous fragment (an MSE player), or only the self-contained segment (a file saver).
PAYLOAD_OMITS = {
    "both": frozenset(),
    "fragment": frozenset({"segment"}),
    "segment": frozenset({"fragment"}),
}


def payload_omit(choice: str | None) -> frozenset[str]:
    """The byte fields to leave out for ``?payload=`` (both, fragment or segment)."""
    if choice is None:
        return PAYLOAD_OMITS["both"]
    if choice not in PAYLOAD_OMITS:
        raise InvalidParameter(
            f"payload must be one of {', '.join(PAYLOAD_OMITS)}, got {choice!r}", param="payload"
        )
    return PAYLOAD_OMITS[choice]


def from_seq_of(last_event_id: str | None, from_seq: str | None) -> int:
    """Where to resume: after `Last-Event-ID` (it wins), else ``?from_seq``, else 0."""
    if last_event_id is not None and last_event_id.strip():
        value = _integer(last_event_id, "Last-Event-ID", minimum=-1)
        return value + 1
    if from_seq is not None:
        return _integer(from_seq, "from_seq", minimum=0)
    return 0


def _integer(text: str, param: str, *, minimum: int) -> int:
    if len(text) > _MAX_DIGITS:
        raise InvalidParameter(f"{param} must be at most {MAX_SEQ}", param=param)
    try:
        value = int(text.strip())
    except ValueError as exc:
        raise InvalidParameter(f"{param} must be an integer, got {text!r}", param=param) from exc
    if value < minimum:
        raise InvalidParameter(f"{param} must be at least {minimum}, got {value}", param=param)
    if value > MAX_SEQ:
        raise InvalidParameter(f"{param} must be at most {MAX_SEQ}, got {value}", param=param)
    return value
