"""Secrets and privacy in logs, auth comparisons, and where the phone-hash key may live (SPEC §7)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server import auth, elevenlabs, logs
from tests.conftest import (
    ADMIN_KEY,
    ELEVENLABS_SECRET,
    MARIA,
    OTHER,
    PHONE_HASH_KEY,
    WEBHOOK_SECRET,
    LiveServer,
    git,
    make_settings,
)

NUMBERS = (MARIA, OTHER, "+14155557777", "+14155559999")


def all_forms(number: str) -> list[str]:
    return [number, number.lstrip("+")]


def vault_text(vault: Path) -> str:
    """Every byte of the vault's working files (not .git), as text."""
    chunks = []
    for path in vault.rglob("*"):
        if path.is_file() and ".git" not in path.relative_to(vault).parts:
            chunks.append(path.read_bytes().decode("utf-8", errors="replace"))
    return "\n".join(chunks)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_secret_or_number_reaches_the_log_even_on_errors(server_factory, tmp_path: Path, fmt: str) -> None:
    server: LiveServer = server_factory(tmp_path / f"vault-{fmt}", LOG_FORMAT=fmt, LOG_LEVEL="DEBUG")
    for number in NUMBERS[:3]:
        assert server.personalize({"caller_id": number, "called_number": "+14155550199"}).status_code == 200
        assert server.admin("POST", f"/api/memory/{number}", json={"fact": "likes tea"}).status_code == 200
        assert server.admin("GET", f"/api/callers/{number}").status_code == 200
    assert server.admin("GET", "/api/callers/+14155559999").status_code == 404
    # Wrong secrets, a signed post-call with a broken body, and a git failure in the middle of a write.
    server.client.post("/api/notes", json={"note": "x"}, headers={"Authorization": f"Bearer {WEBHOOK_SECRET}"})
    server.client.post("/tools/remember", json={"fact": "x", "caller_id": MARIA}, headers={"X-Webhook-Secret": "no"})
    body = b'{"type": "post_call_transcription", "data": {"conversation_id": ' + MARIA.encode()
    stamp = str(int(time.time()))
    mac = hmac.new(ELEVENLABS_SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert (
        server.client.post(
            "/webhook/post-call", content=body, headers={"ElevenLabs-Signature": f"t={stamp},v0={mac}"}
        ).status_code
        == 400
    )
    objects = server.vault / ".git" / "objects"
    objects.rename(objects.with_name("objects.away"))  # git cannot store anything now
    try:
        r = server.admin("POST", f"/api/memory/{MARIA}", json={"fact": "written while git is broken"})
        assert r.status_code == 503, r.text
        assert server.client.get("/health").json()["status"] == "degraded"
    finally:
        objects.with_name("objects.away").rename(objects)
    assert server.admin("POST", f"/api/memory/{MARIA}", json={"fact": "git works again"}).status_code == 200
    assert "written while git is broken" in git(server.vault, "show", "HEAD")
    server.stop()

    log = server.logs()
    assert "ERROR" in log or '"level": "error"' in log, "the git failure was logged"
    for secret in (WEBHOOK_SECRET, ELEVENLABS_SECRET, ADMIN_KEY, PHONE_HASH_KEY):
        assert secret not in log
    for number in NUMBERS:
        for form in all_forms(number):
            assert form not in log
    if fmt == "json":
        for line in log.splitlines():
            if line.startswith("{"):
                json.loads(line)


def test_redaction_filter_catches_numbers_and_secrets_in_messages_and_tracebacks() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "caller %s said %s", (MARIA, "s3cret-value"), None)
    try:
        raise ValueError(f"bad number 0044 20 7183 8750 and {OTHER}")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    logs.RedactingFilter(("s3cret-value",)).filter(record)
    text = record.getMessage() + record.exc_text
    assert MARIA not in text and OTHER not in text and "s3cret-value" not in text
    assert "[phone]" in text and "[secret]" in text
    # Hashes and dates are not numbers to hide.
    assert logs.redact("caller 5f1c9a0e1234 on 2026-11-25") == "caller 5f1c9a0e1234 on 2026-11-25"


def test_auth_compares_in_constant_time(monkeypatch, tmp_path: Path) -> None:
    seen: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a, b):  # type: ignore[no-untyped-def]
        seen.append((a if isinstance(a, bytes) else a.encode(), b if isinstance(b, bytes) else b.encode()))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    settings = make_settings(tmp_path / "v")

    class FakeRequest:  # only headers are read
        def __init__(self, headers: dict[str, str]) -> None:
            self.headers = headers

    auth.require_admin(FakeRequest({"authorization": f"Bearer {ADMIN_KEY}"}), settings)  # type: ignore[arg-type]
    auth.require_webhook_secret(FakeRequest({"x-webhook-secret": WEBHOOK_SECRET}), settings)  # type: ignore[arg-type]
    stamp = int(time.time())
    mac = hmac.new(ELEVENLABS_SECRET.encode(), f"{stamp}.{{}}".encode(), hashlib.sha256).hexdigest()
    assert elevenlabs.verify_signature(f"t={stamp},v0={mac}", b"{}", ELEVENLABS_SECRET)
    compared = {b for pair in seen for b in pair}
    assert ADMIN_KEY.encode() in compared and WEBHOOK_SECRET.encode() in compared and mac.encode() in compared


def test_refuses_a_public_address_without_webhook_secret(tmp_path: Path) -> None:
    from server.config import ConfigError

    with pytest.raises(ConfigError, match="WEBHOOK_SECRET"):
        make_settings(tmp_path / "v", HOST="0.0.0.0", WEBHOOK_SECRET="")
    assert make_settings(tmp_path / "v", HOST="0.0.0.0").host == "0.0.0.0"


@pytest.mark.parametrize("configured", [True, False])
def test_phone_hash_key_never_lands_in_the_vault_or_its_history(
    server_factory, tmp_path: Path, configured: bool
) -> None:
    extra = {} if configured else {"PHONE_HASH_KEY": ""}
    server: LiveServer = server_factory(tmp_path / "vault", **extra)
    server.personalize({"caller_id": MARIA, "called_number": "+14155550199"})
    server.admin("POST", f"/api/memory/{MARIA}", json={"fact": "likes tea"})
    assert server.wait_for(lambda: git(server.vault, "log", "--oneline").count("\n") >= 3, timeout=15)
    server.stop()
    key_file = server.vault / ".git" / "memory-bridge" / "phone-hash-key"
    key = PHONE_HASH_KEY if configured else key_file.read_text().strip()
    assert key_file.exists() is (not configured)
    assert key not in vault_text(server.vault)
    assert key not in git(server.vault, "log", "-p", "--all")
    assert "phone-hash-key" not in git(server.vault, "ls-files")
    assert key not in server.logs()


# -- every written form of a number is redacted -----------------------------------------------------


def _example_numbers() -> list[phonenumbers.PhoneNumber]:
    """phonenumbers' example numbers of every region and every number type it knows."""
    found = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (
            phonenumbers.PhoneNumberType.FIXED_LINE,
            phonenumbers.PhoneNumberType.MOBILE,
            phonenumbers.PhoneNumberType.TOLL_FREE,
            phonenumbers.PhoneNumberType.VOIP,
        ):
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None:
                found.append(number)
    return found


EXAMPLES = _example_numbers()
FORMATS = (
    phonenumbers.PhoneNumberFormat.E164,
    phonenumbers.PhoneNumberFormat.INTERNATIONAL,
    phonenumbers.PhoneNumberFormat.NATIONAL,
    phonenumbers.PhoneNumberFormat.RFC3966,
)
# Separators phonenumbers reads between digit groups, single and repeated.
SEPARATORS = (" ", "  ", "-", ".", "/", " - ", "\u00a0", "\u2013", "\u2011", "\t", ") ", " (", "~", "\u3000")
# What a log line puts around a number.
CONTEXTS = (
    "{}",
    "caller {} said hello",
    "POST /api/memory/{} answered 404",
    "ValueError: bad number '{}'",
    "{{'caller_id': '{}', 'call_sid': 'CA1'}}",
    "tel:{};ext=12",
    "sip:{}@sip.example.com",
    "2026-11-25 14:02 number={}, took 0.4 ms",
)


@st.composite
def written_numbers(draw: st.DrawFn) -> tuple[str, str]:
    """A real number written as people and programs write it: (the text, its digits as dialled).

    Every format phonenumbers produces, its digit groups joined by random separators, with or without
    the plus, percent-encoded in a URL or wrapped in brackets.
    """
    number = draw(st.sampled_from(EXAMPLES))
    fmt = draw(st.sampled_from(FORMATS))
    text = phonenumbers.format_number(number, fmt).removeprefix("tel:")
    plus = text.startswith("+")
    groups = re.findall(r"\d+", text)
    if draw(st.booleans()):  # regroup with random separators, as a person might type it
        text = groups[0]
        for group in groups[1:]:
            text += draw(st.sampled_from(SEPARATORS)) + group
        if plus:
            text = draw(st.sampled_from(("+", "+", "%2B", "00", "+ "))) + text
    elif plus and draw(st.booleans()):
        text = text.removeprefix("+")
    if fmt == phonenumbers.PhoneNumberFormat.NATIONAL and draw(st.booleans()):
        text = f"({text})"
    return text, "".join(groups)


@settings(max_examples=1500, deadline=None, database=None)
@given(written=written_numbers(), context=st.sampled_from(CONTEXTS))
def test_every_written_form_of_a_number_is_redacted(written: tuple[str, str], context: str) -> None:
    text, digits = written
    if len(digits) < logs.MIN_PHONE_DIGITS:
        return  # a few territories' national numbers: shorter than any number with its country code
    redacted = logs.redact(context.format(text))
    assert "[phone]" in redacted, redacted
    # Not one digit of the number is left: the only digits are the log line's own.
    assert re.findall(r"\d", redacted) == re.findall(r"\d", context), (context.format(text), redacted)


def test_redaction_covers_hand_written_formats_and_leaves_dates_and_hashes() -> None:
    for text in (
        "+1 (415) 555-0177",
        "+44 20  7946 0958",
        "(415) 555-0177",
        "415.555.0177",
        "+1-415-555-0177",
        "1 415 555 0177",
        "0044 20 7946 0958",
        "/api/callers/%2B14155550177",
        "/api/callers/415%20555%200177",
        "+14155550177abc",
        "\uff0b\uff11\uff14\uff11\uff15\uff15\uff15\uff15\uff10\uff11\uff17\uff17",  # full-width digits
    ):
        assert not re.search(r"\d{3}", logs.redact(f"caller {text} failed").replace("[phone]", "")), text
    for text in (
        "caller 5f1c9a0e1234 on 2026-11-25",
        "at 2026-11-20 14:02 in 0.52 s",
        "127.0.0.1:8000",
        "commit 1234567abc",
    ):
        assert logs.redact(text) == text


def test_uncaught_exceptions_reach_stderr_only_redacted(tmp_path: Path) -> None:
    """An exception nobody catches, in the main thread or another, is logged redacted, not printed raw."""
    script = (
        "import threading\n"
        "from server import logs\n"
        "from tests.conftest import make_settings\n"
        "from pathlib import Path\n"
        f"logs.configure(make_settings(Path({str(tmp_path / 'v')!r})))\n"
        "def fail():\n"
        "    raise ValueError('thread saw +1 (415) 555-0177')\n"
        "thread = threading.Thread(target=fail)\n"
        "thread.start()\n"
        "thread.join()\n"
        "raise RuntimeError('main saw +44 20  7946 0958')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent
    )
    assert result.returncode == 1
    assert "thread saw [phone]" in result.stderr and "main saw [phone]" in result.stderr, result.stderr
    assert "555-0177" not in result.stderr and "7946 0958" not in result.stderr
