"""Erasure's pure history filter (`server.erasure`): tokens and trailers, what names a caller in a message,
and a fast-export stream rewritten without the erased caller's blobs, changes and names."""

from __future__ import annotations

import io

from hypothesis import given
from hypothesis import strategies as st

from server import erasure
from tests.conftest import MARIA, OTHER
from tests.live_helpers import MARIA_KEY, OTHER_KEY, caller_md

SECRET = b"test-phone-hash-key-0123456789"
PATH = "callers/Maria Lopez.md"


def blob(mark: int, text: str) -> bytes:
    data = text.encode()
    return b"blob\nmark :%d\ndata %d\n" % (mark, len(data)) + data + b"\n"


def commit(mark: int, message: str, changes: list[str], parent: int | None) -> bytes:
    data = message.encode()
    head = b"commit refs/heads/main\nmark :%d\noriginal-oid %s\n" % (mark, (b"%040d" % mark))
    head += b"author A <a@b> 1 +0000\ncommitter A <a@b> 1 +0000\n"
    body = b"".join(change.encode() + b"\n" for change in changes)
    return head + b"data %d\n" % len(data) + data + (b"from :%d\n" % parent if parent else b"") + body + b"\n"


def stream() -> bytes:
    maria, other = caller_md(MARIA, name="Maria Lopez"), caller_md(OTHER, name="Omar Said", facts=["Keeps bees"])
    return b"".join(
        [
            blob(1, maria),
            commit(
                2,
                f"fact for Maria Lopez ({MARIA_KEY[:12]})\n\nSource: api\n",
                ['M 100644 :1 "callers/Maria Lopez.md"'],
                None,
            ),
            blob(3, other),
            commit(
                4,
                "2 changes\n\n- fact for Omar Said\n- hand edit: callers/Maria Lopez.md edited\n",
                ["M 100644 :3 callers/o.md"],
                2,
            ),
        ]
    )


def run(data: bytes, key: str) -> tuple[bytes, erasure.Rewriting]:
    def erased(candidate: str) -> bool:
        return erasure.token(SECRET, candidate) == erasure.token(SECRET, key)

    found = erasure.survey(erasure.events(io.BytesIO(data)), erased)
    out = io.BytesIO()
    record = erasure.rewrite(erasure.events(io.BytesIO(data)), erased, found, out.write)
    return out.getvalue(), record


def test_the_erased_callers_blobs_changes_and_names_go_and_the_rest_stays() -> None:
    out, record = run(stream(), MARIA_KEY)
    assert MARIA_KEY.encode() not in out and b"Maria Lopez" not in out and b"Prefers morning" not in out
    assert OTHER_KEY.encode() in out and b"Keeps bees" in out and b"- fact for Omar Said\n" in out
    assert b"- a change for an erased caller\nfrom :2\n" in out  # a message without a final newline
    assert out.count(b"a change for an erased caller") == 2
    assert record.dropped_blobs == 1 and record.dropped_changes == 1
    assert record.originals == {":2": "0" * 39 + "2", ":4": "0" * 39 + "4"}
    again, _ = run(out, MARIA_KEY)
    assert again == out  # a second pass changes nothing: replicas converge


def test_tokens_name_nobody_without_the_key_and_trailers_round_trip() -> None:
    token = erasure.token(SECRET, MARIA_KEY)
    assert token != erasure.token(b"another-key-0123456789", MARIA_KEY) and MARIA_KEY not in token
    message = f"erase a caller\n\nSource: api\n{erasure.trailer(token, True)}\n{erasure.trailer('a' * 64, False)}\n"
    assert erasure.tokens_in(message) == [(token, True), ("a" * 64, False)]
    assert erasure.key_of(caller_md(MARIA).encode()) == MARIA_KEY
    assert erasure.key_of(b"# no frontmatter\nphone_hash: " + MARIA_KEY.encode()) is None


@given(st.text(min_size=1, max_size=80))
def test_a_message_line_naming_the_caller_never_survives(text: str) -> None:
    found = erasure.Found(keys={MARIA_KEY}, names={"Maria Lopez"}, paths={"callers/Maria Lopez.md"})
    for needle in (MARIA_KEY, MARIA_KEY[:12], "maria lopez", "callers/Maria Lopez.md"):
        scrubbed = erasure.scrub_message(f"{text}\n{text}{needle}{text}\n", found.needles())
        assert needle.lower() not in scrubbed.lower()
        assert scrubbed.split("\n")[0] == text.split("\n")[0] or any(n in text.lower() for n in found.needles())
