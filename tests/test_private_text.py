"""Private text (SPEC §14): `%% comments %%` and `## Private` sections never reach a prompt or a variable.

Property-based over random text: whatever a person writes inside a comment or a private section,
in a caller file, a daily note or the soul, the personalize answer composed from the parsed files
holds none of it, and the public text around it still arrives.
"""

from __future__ import annotations

import datetime as dt

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.compose import compose
from server.config import Settings
from server.parse import parse_caller, parse_note, parse_soul
from server.private import public_text, without_comments, without_private_sections
from tests.conftest import LiveServer
from tests.live_helpers import caller_md, prompt_of, request, today

KEY = "ab" * 32
DAY = "2026-11-25"
NOW = dt.datetime(2026, 11, 25, 14, 0, tzinfo=dt.UTC)
SECRET = "QZXSECRET"  # stands in for what a person hid; random text surrounds it
# Text a person may write anywhere: letters, digits, punctuation, '#', single '%' inside, newlines.
_CHARS = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"), exclude_characters="%")
hidden = st.tuples(st.text(_CHARS, max_size=40), st.text(st.sampled_from("\n #-*"), max_size=6)).map(
    lambda parts: f"{parts[0]}{parts[1]}{SECRET}{parts[1]}{parts[0]}"
)
# A private section's own lines: anything but a heading of level 1 or 2, which would end the section.
private_lines = st.lists(hidden.map(lambda text: "\n".join(f"  {line}" for line in text.split("\n"))), max_size=4)


def strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def answer_strings(caller_text: str, soul_text: str, note_text: str) -> list[str]:
    """Every string of the personalize answer composed from these three files."""
    caller = parse_caller(caller_text)
    soul = parse_soul(soul_text)
    note = parse_note(DAY, note_text)
    answer = compose(caller, soul, {DAY: note}, NOW, Settings())
    return strings(msgspec.json.decode(msgspec.json.encode(answer)))


def squashed(text: str) -> str:
    return "".join(text.split())


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(comment=hidden, private=private_lines, inline=st.booleans(), spans=st.booleans())
def test_comments_and_private_sections_never_reach_the_answer(
    comment: str, private: list[str], inline: bool, spans: bool
) -> None:
    joined = "\n".join(private)
    fact = f"Likes tea %%{comment}%% and biscuits" if inline else "Likes tea and biscuits"
    block = f"\n%%\n{comment}\n%%\n" if spans else ""
    caller_text = (
        f'---\nphone_hash: "{KEY}"\nname: Maria Lopez\ncall_count: 2\n---\n# Maria Lopez\n\n'
        f"## Facts\n- {fact}\n- Has a dog %%{comment}%%\n{block}\n"
        f"## Private\n{joined}\n- {SECRET} biopsy results\n\n"
        f"## Notes\nPrefers email %%{comment}%%\n"
    )
    soul_text = f"---\nfirst_message: Hello\n---\nYou are kind. %%{comment}%%\n\n## Private\n{SECRET} {joined}\n"
    note_text = f"# {DAY}\n- Office closes at 3 %%{comment}%%\n\n## Private\nCall back Mrs Jones {SECRET}\n{joined}\n"
    found = answer_strings(caller_text, soul_text, note_text)
    assert not any(SECRET in text for text in found)
    assert not any(SECRET in squashed(text) for text in found)  # not even split apart by the neutraliser
    whole = "\n".join(found)
    for public in ("Likes tea", "Has a dog", "Prefers email", "You are kind.", "Office closes at 3"):
        assert public in whole


@given(before=st.text(_CHARS, max_size=30), inside=st.text(_CHARS, max_size=30), after=st.text(_CHARS, max_size=30))
def test_a_comment_is_cut_exactly_and_an_unclosed_one_hides_the_rest(before: str, inside: str, after: str) -> None:
    assert without_comments(f"{before}%%{inside}%%{after}") == before + after
    assert without_comments(f"{before}%%{inside}") == before
    assert without_comments(before) == before


def test_a_private_section_ends_at_the_next_heading_of_level_two_or_one() -> None:
    body = "## Facts\n- a\n## Private\n- hidden\n### sub\nhidden too\n## Notes\nshown\n# Top\nshown\n"
    assert without_private_sections(body) == "## Facts\n- a\n## Notes\nshown\n# Top\nshown\n"
    assert without_private_sections("# private\nhidden\n## Facts\n- a\n") == "## Facts\n- a\n"
    assert public_text("## **Private:**\nx\n## Facts\n- a %%b%%\n") == "## Facts\n- a \n"
    assert public_text("## Privately kept\n- a\n") == "## Privately kept\n- a\n"


def test_private_text_in_a_live_vault_stays_out_of_the_webhook_answer(server: LiveServer) -> None:
    number = "+14155550177"
    hidden_fact = "- Has a dog %%call back about her biopsy%%\n"
    text = caller_md(number, facts=("Likes tea",), notes="Shown note\n\n## Private\nOwes 300 dollars\n")
    text = text.replace("## Calls", hidden_fact.join(["", ""]) + "## Calls", 1)
    (server.vault / "callers" / "maria.md").write_text(text, encoding="utf-8")
    (server.vault / "notes" / f"{today()}.md").write_text(
        "# today\nParking is free %%the alarm code is 4411%%\n## Private\nMrs Jones: biopsy\n", encoding="utf-8"
    )
    soul = (server.vault / "soul.md").read_text(encoding="utf-8")
    (server.vault / "soul.md").write_text(soul + "\n%%staff only: the safe is behind the desk%%\n", encoding="utf-8")

    def answer() -> str:
        return server.personalize(request(number)).text

    server.wait_for(lambda: "Parking is free" in answer() and "Has a dog" in answer(), timeout=5)
    body = answer()
    assert "Likes tea" in body and "Shown note" in body and "Parking is free" in body and "Has a dog" in body
    for private in ("biopsy", "Owes 300", "alarm code", "4411", "Mrs Jones", "the safe"):
        assert private not in body
    shown = server.admin("GET", f"/api/callers/{number}").json()
    assert "biopsy" not in str(shown) and "Owes" not in str(shown)
    assert "Shown note" in prompt_of(server.personalize(request(number)).json())
