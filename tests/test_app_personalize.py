"""The personalize webhook over real HTTP: a real server, a real vault and real git (SPEC §6).

Most tests share one server: each calls with numbers of its own (`fresh_number`) and checks what its
own calls did; Maria's file is written anew by each test that needs it. The ones that need other
settings or stop the server start their own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from litestar.exceptions import WebSocketDisconnect
from litestar.testing import TestClient

from server.answers import AnswerCache, caller_json
from server.app import create_app, create_asgi
from server.parse import parse_caller
from server.service import open_service
from tests.conftest import (
    AGENT_NUMBER,
    MARIA,
    OTHER,
    WEBHOOK_SECRET,
    LiveServer,
    fixture_json,
    git,
    make_settings,
    vault_head,
)
from tests.live_helpers import (
    assert_valid_answer,
    caller_files_but,
    caller_md,
    commits,
    first_message_of,
    frontmatter,
    key_for,
    known_file,
    preview,
    prompt_of,
    request,
    soul_variables,
    source_of,
    today,
    wait_until,
)

NEW_NUMBER = "+14155550142"  # on a server of the test's own
NOTE = "Office closes early at 3pm today because of the staff party."
MARIA_FACTS = ("Prefers morning appointments", "Has a dog named Rex")
MARIA_SUMMARY = "Asked to move her dentist appointment to Friday."


@pytest.fixture
def server(shared: LiveServer) -> LiveServer:
    """The module's shared server."""
    return shared


def add_maria(server: LiveServer, *, with_note: bool = True, **caller: Any) -> Path:
    """Write Maria's caller file (and today's note) by hand; wait until the server has indexed them."""
    path = server.vault / "callers" / "maria.md"
    path.write_text(caller_md(MARIA, **caller), encoding="utf-8")
    # The file may be there from an earlier test: what is served must be its new content.
    written = msgspec.json.decode(
        msgspec.json.encode(caller_json(parse_caller(path.read_text(encoding="utf-8")), "callers/maria.md"))
    )
    wait_until(
        lambda: server.admin("GET", f"/api/callers/{key_for(MARIA)}").json() == written, what="Maria to be indexed"
    )
    if with_note:
        # Yesterday's and tomorrow's notes are written first: once today's is seen, they have been too.
        day = dt.date.fromisoformat(today())
        for other_day, text in (
            (day - dt.timedelta(days=1), "YESTERDAY-NOTE"),
            (day + dt.timedelta(days=1), "TOMORROW"),
        ):
            (server.vault / "notes" / f"{other_day}.md").write_text(f"- {text}\n", encoding="utf-8")
        (server.vault / "notes" / f"{today()}.md").write_text(f"# {today()}\n\n- {NOTE}\n", encoding="utf-8")
        wait_until(lambda: NOTE in preview(server, MARIA)["dynamic_variables"]["daily_notes"], what="the note")
    return path


def answer(server: LiveServer, body: dict | bytes, **headers: str) -> dict:
    response = server.personalize(body, **headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def soul_body(vault: Path) -> str:
    text = (vault / "soul.md").read_text(encoding="utf-8")
    return text.split("\n---\n", 1)[1].strip()


def caller_files(vault: Path) -> set[str]:
    return {p.name for p in (vault / "callers").glob("*.md")}


def file_of(number: str) -> str:
    """The name of the file a call from a new caller `number` makes."""
    return f"{key_for(number)[:12]}.md"


def callers_but(vault: Path, *left_out: str) -> dict[str, bytes]:
    """The bytes of every caller file but those named (file names in callers/)."""
    return caller_files_but(vault, *(f"callers/{name}" for name in left_out))


def recorded(server: LiveServer, number: str, count: int) -> bool:
    """Whether the new caller `number` has a file with `call_count` == count, committed."""
    path = server.vault / "callers" / f"{key_for(number)[:12]}.md"
    if not path.exists() or frontmatter(path).get("call_count") != count:
        return False
    # Written is not yet committed: the file must also be what git has (no change left in the work tree).
    relpath = path.relative_to(server.vault).as_posix()
    return (
        server.client.get("/health").json()["pending_writes"] == 0
        and git(server.vault, "status", "--porcelain", "--", relpath) == ""
    )


def test_fixture_requests_get_the_flat_answer(server: LiveServer) -> None:
    add_maria(server)
    soul_vars = soul_variables(server.vault)
    for name, known in [
        ("personalize_request.json", True),
        ("personalize_request_legacy.json", False),
        ("personalize_request_sip.json", True),
    ]:
        body = answer(server, fixture_json(name))
        # user_id is the caller's key (SPEC §13): the legacy fixture's caller is a number too.
        assert set(body) == {"type", "dynamic_variables", "conversation_config_override", "user_id"}, name
        assert body["type"] == "conversation_initiation_client_data"
        variables = assert_valid_answer(body, soul_vars)
        assert variables["caller_known"] is known, name
        assert variables["caller_name"] == ("Maria Lopez" if known else ""), name
        assert set(body["conversation_config_override"]) == {"agent"}
        assert set(body["conversation_config_override"]["agent"]) == {"prompt", "first_message"}
        assert (MARIA_FACTS[0] in prompt_of(body)) is known
        assert NOTE in prompt_of(body)


def test_known_caller_gets_memory_and_todays_note(server: LiveServer, fresh_number: Callable[[], str]) -> None:
    add_maria(server)
    soul_vars = soul_variables(server.vault)
    soul_meta = frontmatter(server.vault / "soul.md")
    body = answer(server, request(MARIA))
    variables = assert_valid_answer(body, soul_vars)
    assert variables["caller_known"] is True
    assert variables["caller_name"] == "Maria Lopez"
    assert variables["call_count"] == 3
    assert variables["last_call_date"] == "2026-11-20"
    assert variables["last_call_summary"] == MARIA_SUMMARY
    for fact in MARIA_FACTS:
        assert fact in variables["caller_memory"]
    assert MARIA_SUMMARY in variables["caller_memory"]
    assert "Free text a person wrote." in variables["caller_memory"]
    assert variables["daily_notes"] == f"- {NOTE}"
    for name, default in soul_vars.items():
        assert variables[name] == default, name

    prompt = prompt_of(body)
    body_text = soul_body(server.vault)
    assert prompt.startswith(body_text), "the soul comes first, whole"
    rest = prompt[len(body_text) :]
    for text in (*MARIA_FACTS, MARIA_SUMMARY, "Free text a person wrote.", NOTE):
        assert text in rest, text
    assert "YESTERDAY-NOTE" not in prompt and "TOMORROW" not in prompt, "only today's note is shown"
    assert first_message_of(body) == soul_meta["first_message_returning"]

    # Another caller learns nothing about Maria, but today's note is for everyone.
    other = answer(server, request(fresh_number()))
    other_vars = assert_valid_answer(other, soul_vars)
    assert other_vars["caller_known"] is False
    assert other_vars["daily_notes"] == variables["daily_notes"]
    everything = str(other)
    for text in ("Maria", *MARIA_FACTS, MARIA_SUMMARY, "Free text a person wrote."):
        assert text not in everything, text
    assert first_message_of(other) == soul_meta["first_message"]


def test_unknown_and_withheld_callers_get_the_defaults(server: LiveServer, fresh_number: Callable[[], str]) -> None:
    new = fresh_number()
    add_maria(server)
    start, callers, others = (
        vault_head(server.vault),
        server.client.get("/health").json()["callers"],
        callers_but(server.vault),
    )
    soul_vars = soul_variables(server.vault)
    first = answer(server, request(new))
    # The new caller's answer names them by key only; a withheld caller's has no user_id at all.
    assert first.pop("user_id") == key_for(new)
    baseline = first
    variables = assert_valid_answer(baseline, soul_vars)
    assert variables["caller_known"] is False
    assert variables["call_count"] == 0
    assert variables["caller_name"] == ""
    assert variables["last_call_date"] == ""
    assert variables["last_call_summary"] == ""
    assert NOTE in variables["daily_notes"]
    for text in ("Maria", *MARIA_FACTS, MARIA_SUMMARY):
        assert text not in str(baseline), text
    wait_until(lambda: recorded(server, new, 1), what="the new caller's call to be recorded")

    withheld = fixture_json("withheld_caller_ids.json")
    assert len(withheld) == 17
    for _ in range(2):  # calling twice must not make a withheld caller known
        for caller_id in withheld:
            body = answer(server, request(caller_id))
            assert_valid_answer(body, soul_vars)
            assert body == baseline, caller_id
            body = answer(server, request(caller_id, called_number=MARIA))
            assert body == baseline, caller_id

    # A barrier: a later call's recording is committed, so the withheld calls' would have been too.
    answer(server, request(new))
    wait_until(lambda: recorded(server, new, 2), what="the barrier call to be recorded")
    assert callers_but(server.vault, file_of(new)) == others, "a withheld call made or changed a caller file"
    assert frontmatter(server.vault / "callers" / "maria.md")["call_count"] == 3
    assert server.client.get("/health").json()["callers"] == callers + 1
    webhook = [c for c in commits(server.vault, since=start) if source_of(c["message"]) == "webhook"]
    assert [c["files"] for c in webhook] == [[f"callers/{file_of(new)}"]] * 2


def test_caller_text_never_brings_placeholders(server: LiveServer, fresh_number: Callable[[], str]) -> None:
    other = fresh_number()
    path = server.vault / "callers" / "other.md"
    path.write_text(
        caller_md(
            other,
            name="{{evil}} Smith",
            facts=("Says {{anything}} is fine", "Closes }} and opens {{ braces", "{{system__caller_id}}"),
            calls=("2026-11-20 09:00 · Asked about {{system__call_sid}} (conv_abc)",),
            notes="Note {{secret_var}} here }}{{",
            extra='business_name: "{{biz}} Ltd"\n',
        ),
        encoding="utf-8",
    )
    wait_until(lambda: known_file(server, other), what="the caller to be indexed")
    response = server.personalize(request(other))
    assert response.status_code == 200
    body = response.json()
    variables = assert_valid_answer(body, soul_variables(server.vault))
    assert variables["caller_known"] is True
    for placeholder in ("{{evil}}", "{{anything}}", "{{system__caller_id}}", "{{system__call_sid}}", "{{secret_var}}"):
        assert placeholder not in response.text, placeholder
    assert "{{biz}}" not in response.text
    for name, value in variables.items():
        if isinstance(value, str):
            assert "{{" not in value and "}}" not in value, (name, value)
    assert "anything" in variables["caller_memory"], "the fact is kept, only its braces are broken apart"
    assert "Ltd" in variables["business_name"]
    memory_part = prompt_of(body)[len(soul_body(server.vault)) :]
    assert "anything" in memory_part
    assert "{{" not in memory_part and "}}" not in memory_part


def test_outbound_call_uses_the_customers_memory(server: LiveServer) -> None:
    add_maria(server, with_note=False)
    files = caller_files(server.vault)
    body = answer(server, request(AGENT_NUMBER, called_number=MARIA))
    variables = assert_valid_answer(body, soul_variables(server.vault))
    assert variables["caller_known"] is True
    assert variables["caller_name"] == "Maria Lopez"
    assert variables["call_count"] == 3
    assert MARIA_FACTS[0] in prompt_of(body)
    # The call is Maria's: her count goes up, and the agent's own number is never made a caller.
    path = server.vault / "callers" / "maria.md"
    wait_until(lambda: frontmatter(path)["call_count"] == 4, what="Maria's call to be recorded")
    wait_until(lambda: server.client.get("/health").json()["pending_writes"] == 0)
    assert caller_files(server.vault) == files
    assert frontmatter(path)["last_call"].isoformat() == today()


BAD_BODIES = [
    b"",
    b"{not json",
    b"[1, 2, 3]",
    b'["+14155550123"]',
    b"null",
    b"123",
    b'"+14155550123"',
    b"\xff\xfe\x00garbage",
    b'{"caller_id": 14155550123, "called_number": ["+14155550199"]}',
    b'{"caller_id": null, "called_number": null}',
    b'{"caller_id": {"number": "+14155550123"}, "call_sid": 5}',
    b'{"caller_id": true}',
    b'{"caller_id": "+1415555',
]


def test_bad_bodies_get_a_valid_default_answer(server: LiveServer, fresh_number: Callable[[], str]) -> None:
    new, others = fresh_number(), callers_but(server.vault)
    soul_vars = soul_variables(server.vault)
    baseline = answer(server, request("anonymous"))
    for body in BAD_BODIES:
        got = answer(server, body)
        assert_valid_answer(got, soul_vars)
        assert got == baseline, body
    # Nothing is recorded for a bad body (Maria's number inside one must not create her, or count a call of hers).
    answer(server, request(new))
    wait_until(lambda: recorded(server, new, 1), what="the barrier call to be recorded")
    assert callers_but(server.vault, file_of(new)) == others


def test_webhook_secret_is_required_when_set(server: LiveServer, fresh_number: Callable[[], str]) -> None:
    new, others = fresh_number(), callers_but(server.vault)
    url = f"{server.url}/webhook/personalize"
    payload = request(fresh_number())
    wrong = [
        {},
        {"Authorization": "Bearer wrong-secret-123"},
        {"Authorization": f"Bearer {WEBHOOK_SECRET}x"},
        {"Authorization": f"Basic {WEBHOOK_SECRET}"},
        {"Authorization": WEBHOOK_SECRET},
        {"X-Webhook-Secret": "wrong-secret-123"},
        {"X-Webhook-Secret": ""},
        {"Authorization": "Bearer", "X-Webhook-Secret": "x"},
    ]
    for headers in wrong:
        response = httpx.post(url, json=payload, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["detail"], headers
    soul_vars = soul_variables(server.vault)
    for headers in [{"Authorization": f"Bearer {WEBHOOK_SECRET}"}, {"X-Webhook-Secret": WEBHOOK_SECRET}]:
        response = httpx.post(url, json=request(new), headers=headers)
        assert response.status_code == 200, headers
        assert_valid_answer(response.json(), soul_vars)
    wait_until(lambda: recorded(server, new, 2), what="both authorised calls to be recorded")
    assert callers_but(server.vault, file_of(new)) == others, "a refused call records nothing"


def test_the_bare_route_speaks_http_like_the_others(server: LiveServer) -> None:
    # The route reads its body and writes its answer by hand: methods, chunked bodies and limits.
    got = server.client.get("/webhook/personalize")
    assert (got.status_code, got.headers["allow"], got.json()["status_code"]) == (405, "POST", 405)

    def chunks(total: int) -> Iterator[bytes]:
        yield b'{"caller_id": "'
        for _ in range(total // 1000):
            yield b"1" * 1000
        yield b'"}'

    headers = {"Authorization": f"Bearer {WEBHOOK_SECRET}"}
    chunked = server.client.post("/webhook/personalize", content=chunks(10_000), headers=headers)
    assert chunked.status_code == 200 and chunked.json()["dynamic_variables"]["caller_known"] is False
    too_big = server.client.post("/webhook/personalize", content=chunks(70_000), headers=headers)
    assert too_big.status_code == 413 and too_big.json()["detail"]


def test_a_personalize_call_that_fails_outside_its_answer_is_still_json(tmp_path: Path) -> None:
    # `create_asgi` takes personalize ahead of Litestar, so Litestar's error handler is not there to
    # catch; its own guard must be. Without the lifespan the app holds no service: the route fails.
    asgi_app = create_asgi(make_settings(tmp_path / "vault"))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/webhook/personalize", "headers": [], "state": {}}
    asyncio.run(asgi_app(scope, receive, send))  # type: ignore[arg-type]
    assert sent[0]["status"] == 500
    assert msgspec.json.decode(sent[1]["body"]) == {"status_code": 500, "detail": "internal error; see the server log"}


def test_a_websocket_to_the_route_is_refused_cleanly(tmp_path: Path) -> None:
    # Over uvicorn any refusal reads as 403; in process, the close says whether it was ours or a crash.
    with TestClient(create_app(make_settings(tmp_path / "vault"))) as client:
        with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/webhook/personalize"):
            pass
        assert (refused.value.code, refused.value.detail) == (1003, "personalize is an HTTP webhook")
        auth = {"Authorization": f"Bearer {WEBHOOK_SECRET}"}
        assert client.post("/webhook/personalize", json={"caller_id": MARIA}, headers=auth).status_code == 200


@pytest.mark.parametrize(
    ("env", "agent_keys"),
    [
        ({"OVERRIDE_PROMPT": "false"}, {"first_message"}),
        ({"OVERRIDE_FIRST_MESSAGE": "false"}, {"prompt"}),
        ({"OVERRIDE_PROMPT": "false", "OVERRIDE_FIRST_MESSAGE": "false"}, set()),
    ],
)
def test_overrides_switched_off_are_absent(server_factory, env: dict[str, str], agent_keys: set[str]) -> None:  # type: ignore[no-untyped-def]
    # The language and voice overrides are switched on (SPEC §13: opt-in) to show they stand alone.
    server = server_factory(**env, OVERRIDE_LANGUAGE="true", OVERRIDE_VOICE="true")
    soul_vars = soul_variables(server.vault)
    body = answer(server, request(NEW_NUMBER))
    assert_valid_answer(body, soul_vars)
    if agent_keys:
        assert body["conversation_config_override"] == {
            "agent": {k: v for k, v in body["conversation_config_override"]["agent"].items() if k in agent_keys}
        }
        assert set(body["conversation_config_override"]["agent"]) == agent_keys
    else:
        assert "conversation_config_override" not in body
    # A caller's own language and voice still come through, and nothing else appears.
    (server.vault / "callers" / "lang.md").write_text(
        caller_md(OTHER, extra="language: es\nvoice_id: voice_abc123\n"), encoding="utf-8"
    )
    wait_until(lambda: known_file(server, OTHER), what="the caller to be indexed")
    body = answer(server, request(OTHER))
    assert_valid_answer(body, soul_vars)
    override = body["conversation_config_override"]
    assert override["tts"] == {"voice_id": "voice_abc123"}
    assert set(override) == {"agent", "tts"}
    assert set(override["agent"]) == {*agent_keys, "language"}
    assert override["agent"]["language"] == "es"


def test_past_the_deadline_the_answer_is_the_default(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(PERSONALIZE_DEADLINE_MS="1", PROMPT_MAX_CHARS="1000000")
    soul_vars = soul_variables(server.vault)
    facts = [f"Fact number {i:05d} about this caller's many preferences" for i in range(12_000)]
    (server.vault / "callers" / "maria.md").write_text(caller_md(MARIA, facts=facts), encoding="utf-8")
    wait_until(lambda: known_file(server, MARIA), timeout=10, what="the big caller file to be indexed")
    baseline = answer(server, request("anonymous"))
    logged = len(server.logs())
    started = time.monotonic()
    body = answer(server, request(MARIA))
    elapsed = time.monotonic() - started
    variables = assert_valid_answer(body, soul_vars)
    assert variables["caller_known"] is False
    assert body == baseline
    assert "Fact number" not in str(body)
    assert elapsed < 5
    wait_until(lambda: "past the deadline" in server.logs()[logged:], what="the late answer to be logged")


def test_a_new_callers_call_is_recorded_after_the_answer(server: LiveServer, fresh_number: Callable[[], str]) -> None:
    new = fresh_number()
    soul_vars = soul_variables(server.vault)
    before = len(commits(server.vault))
    first = answer(server, request(new))
    assert assert_valid_answer(first, soul_vars)["caller_known"] is False
    path = server.vault / "callers" / f"{key_for(new)[:12]}.md"
    wait_until(lambda: recorded(server, new, 1), what="the first call to be recorded")
    meta = frontmatter(path)
    assert meta["phone_hash"] == key_for(new)
    assert meta["call_count"] == 1
    assert meta["first_call"].isoformat() == today()
    assert meta["last_call"].isoformat() == today()
    history = commits(server.vault)
    assert len(history) == before + 1
    assert source_of(history[0]["message"]) == "webhook"
    assert history[0]["files"] == [f"callers/{path.name}"]
    assert key_for(new)[:12] in history[0]["message"]

    second = answer(server, request(new))
    variables = assert_valid_answer(second, soul_vars)
    assert variables["caller_known"] is True
    assert variables["call_count"] == 1, "the answer shows the calls before this one"
    wait_until(lambda: recorded(server, new, 2), what="the second call to be recorded")
    meta = frontmatter(path)
    assert meta["call_count"] == 2
    assert meta["first_call"].isoformat() == today()
    history = commits(server.vault)
    assert len(history) == before + 2, "each recorded call is one commit"
    assert [source_of(c["message"]) for c in history[:2]] == ["webhook", "webhook"]
    assert git_clean(server.vault)


def git_clean(vault: Path) -> bool:
    return git(vault, "status", "--porcelain") == ""


@pytest.mark.slow(seconds=5)
def test_every_answered_call_is_recorded_when_the_server_stops_mid_batch(server_factory) -> None:  # type: ignore[no-untyped-def]
    server: LiveServer = server_factory()
    numbers = [f"+1415555{i:04d}" for i in range(1000, 2000)]
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {WEBHOOK_SECRET}"}) as client:
        for number in numbers:
            assert client.post("/webhook/personalize", json=request(number)).status_code == 200
    # SIGTERM while the recorder is writing a batch (files appearing, not all there yet).
    files = server.vault / "callers"
    before = len(list(files.glob("*.md")))
    wait_until(lambda: before < len(list(files.glob("*.md"))) or before == len(numbers), interval=0.002)
    server.stop()
    missing = [n for n in numbers if not (files / f"{key_for(n)[:12]}.md").exists()]
    assert not missing, f"{len(missing)} of {len(numbers)} answered calls were never recorded"
    for number in numbers:
        assert frontmatter(files / f"{key_for(number)[:12]}.md")["call_count"] == 1
    assert git(server.vault, "status", "--porcelain") == "", "every recorded call is committed before exit"


def test_a_reused_answer_turns_to_the_next_days_note_at_local_midnight(tmp_path: Path) -> None:
    # The answer cache remembers the business day for a minute at a time: the minute that starts
    # the day in the business time zone (08:00 UTC in Los Angeles in November) must see the new note.
    root = tmp_path / "vault"
    open_service(make_settings(root))  # creates the vault
    (root / "notes" / "2026-11-24.md").write_text("- MONDAY-NOTE\n", encoding="utf-8")
    (root / "notes" / "2026-11-25.md").write_text("- TUESDAY-NOTE\n", encoding="utf-8")
    service = open_service(make_settings(root, TIMEZONE="America/Los_Angeles"))
    answers = AnswerCache()

    def note_at(moment: str) -> str:
        content = answers.get(service, None, dt.datetime.fromisoformat(moment))
        return str(msgspec.json.decode(content)["dynamic_variables"]["daily_notes"])

    assert "MONDAY-NOTE" in note_at("2026-11-25T07:59:00+00:00")
    assert "MONDAY-NOTE" in note_at("2026-11-25T07:59:59.999999+00:00")
    assert "TUESDAY-NOTE" in note_at("2026-11-25T08:00:00+00:00")
    assert "TUESDAY-NOTE" in note_at("2026-11-25T08:00:30+00:00")
    assert "MONDAY-NOTE" in note_at("2026-11-25T07:00:00+00:00"), "a clock set back is followed too"
    same = dt.datetime(2026, 11, 25, 9, 0, 1, tzinfo=dt.UTC)
    assert answers.get(service, None, same) is answers.get(service, None, same + dt.timedelta(seconds=30))
