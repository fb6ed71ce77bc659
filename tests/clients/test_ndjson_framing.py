"""NDJSON framing, fed bytes split at awkward places; no server."""

import pytest
from streamgen_client.errors import ProtocolError
from streamgen_client.ndjson import NDJSONDecoder

STREAM = (
    b'{"status": "started", "seq": 0, "caf\xc3\xa9": 1}\n'
    b"\n"
    b'{"status": "segment", "seq": 1, "segment_base64": "AAEC"}\r\n'
    b'{"status": "completed", "seq": 2, "final": true}\n'
)
EXPECTED = [
    {"status": "started", "seq": 0, "café": 1},
    {"status": "segment", "seq": 1, "segment_base64": "AAEC"},
    {"status": "completed", "seq": 2, "final": True},
]


def feed(decoder: NDJSONDecoder, chunks):
    out = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    return out


def test_same_objects_however_the_body_is_split():
    splits = [[STREAM], [STREAM[i : i + 1] for i in range(len(STREAM))]]
    splits += [[STREAM[:cut], STREAM[cut:]] for cut in range(1, len(STREAM))]
    for chunks in splits:
        decoder = NDJSONDecoder()
        assert feed(decoder, chunks) == EXPECTED, chunks
        decoder.close()  # ended cleanly
        assert decoder.lines == 4


def test_a_truncated_last_line_is_pending_and_close_says_so():
    decoder = NDJSONDecoder()
    assert feed(decoder, [STREAM[:-5]]) == EXPECTED[:2]
    assert decoder.pending
    with pytest.raises(ProtocolError, match="ended inside line 4"):
        decoder.close()


def test_a_line_that_is_not_json_names_its_line_number():
    decoder = NDJSONDecoder()
    with pytest.raises(ProtocolError, match="line 2 is not valid JSON"):
        feed(decoder, [b'{"a": 1}\n{"a": \n'])


def test_a_line_that_is_not_an_object_is_refused():
    with pytest.raises(ProtocolError, match="JSON list, not an object"):
        NDJSONDecoder().feed(b"[1, 2]\n")


def test_a_line_over_the_limit_is_refused_before_its_newline():
    decoder = NDJSONDecoder(max_line_bytes=100)
    decoder.feed(b'{"a": "' + b"x" * 90)
    with pytest.raises(ProtocolError, match="over 100 bytes"):
        decoder.feed(b"x" * 20)
