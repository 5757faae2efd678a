"""Synthetic vaults for the benchmark: realistic callers in the real file format, in one git commit.

A vault has `soul.md` (the service's starter soul), `callers/` with one file per caller and
`notes/` with daily notes (including one for today, so every answer carries today's notes).
Callers have names, aliases, call counts and dates, several facts, several `## Calls` lines and
sometimes notes. About 5% are "hand-formatted" the way a person editing in Obsidian or a text
editor leaves them: comments, odd quoting, flow lists, unknown keys, other key orders, and a few
files renamed after the caller.

Files are rendered as text (fast enough for 100k callers) in exactly the layout
`server.edits.new_caller_text`, `set_properties` and `append_to_section` produce; `check_sample`
parses a sample with the service's own parser so the two can never drift apart silently.

Generation is cached: a vault is reused when its stamp (size, seed, key, generator version) matches
and its git work tree is clean. `python -m benchmarks.generate --callers 10000 DIR` makes one by hand.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import random
import shutil
import string
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from server import edits, markdown, parse, phone, vault

# Bump when the generated content changes, so cached vaults are rebuilt.
GENERATOR_VERSION = 3
HAND_FORMATTED_SHARE = 0.05
RENAMED_SHARE = 0.02
DAILY_NOTE_DAYS = 45

# fmt: off
FIRST = [
    "Maria", "James", "Aisha", "Chen", "Olga", "Tom", "Priya", "Lucas", "Fatima", "Noah", "Emma", "Mateo",
    "Sofia", "Liam", "Yuki", "Omar", "Grace", "Ivan", "Chloe", "Diego", "Hana", "Samuel", "Leila", "Marco",
    "Nina", "Ahmed", "Zoe", "Pablo", "Ingrid", "Kofi", "Rosa", "Daniel", "Mei", "Arjun", "Clara", "Tariq",
    "Elena", "Hugo", "Amara", "Felix", "Dana", "Ravi", "Lena", "Oscar", "Ines", "Kwame", "Julia", "Mohammed",
    "Alice", "Sven", "Beatriz",
]
LAST = [
    "Lopez", "Smith", "Khan", "Wang", "Petrova", "Brown", "Patel", "Martin", "Haddad", "Johnson", "Garcia",
    "Rossi", "Nguyen", "Tanaka", "Ali", "Müller", "Kowalski", "O'Brien", "Silva", "Dubois", "Andersen", "Okafor",
    "Cohen", "Novak", "Schmidt", "Moreau", "Fernández", "Kim", "Larsen", "Mensah", "Costa", "Ivanova", "Jensen",
    "Murphy", "Sato", "Yilmaz", "Hughes", "Bakker", "Rahman", "Walsh",
]
# fmt: on
FACTS = (
    "Prefers morning appointments",
    "Has a dog named {pet}",
    "Allergic to penicillin",
    "Works night shifts at the hospital",
    "Prefers to be called {nick}",
    "Speaks Spanish at home; English is fine on the phone",
    "Usually calls about the {topic}",
    "Wants a text reminder the day before",
    "Hard of hearing: speak slowly and clearly",
    "Has two kids, {kid1} and {kid2}",
    "Pays by card, never cash",
    "Lives near the {place} branch",
    "Birthday on {month} {day}",
    "Needs wheelchair access",
    "Was unhappy with the wait last time; keep it short",
    "Referred by {first} {last}",
    "Has a standing appointment every other Tuesday",
    "Prefers email for paperwork",
)
TOPICS = ("dentist appointment", "invoice", "delivery", "insurance forms", "prescription refill", "repair booking")
PLACES = ("Mission", "Sunset", "Castro", "Marina", "Oakland", "Richmond")
PETS = ("Rex", "Luna", "Biscuit", "Max", "Pepper", "Milo")
SUMMARIES = (
    "Asked to move the {topic} to Friday.",
    "Called about the {topic}; the team will call back tomorrow.",
    "Confirmed the {topic} for next week.",
    "Wanted an update on the {topic}. Told them it is in progress.",
    "Booked a new appointment for the afternoon.",
    "Cancelled the {topic}; will call again after the holidays.",
    "Asked for the opening hours and parking information.",
    "Left a message for {first} about the {topic}.",
)
NOTES = (
    "Prefers a callback after 5pm.",
    "Spoke with the manager last month about a refund.",
    "Mentioned moving to a new address soon.",
    "Sometimes calls from a work line.",
)
DAILY = (
    "Dr. {last} is out today; offer appointments with the other doctor.",
    "The office closes at 3pm today for staff training.",
    "Parking lot is being repainted: use the street entrance.",
    "New patients get a welcome pack at the front desk.",
    "Card payments are down until noon; cash or invoice only.",
    "Flu shots available without an appointment this week.",
)
COMMENTS = ("# imported by hand from the old CRM", "# checked by the front desk", "# TODO: confirm address")


@dataclass(frozen=True)
class Params:
    """What a generated vault is made of; a cached vault is reused only when these match."""

    callers: int
    seed: int
    key: str
    today: str
    version: int = GENERATOR_VERSION

    def stamp(self) -> str:
        """The stamp text stored beside a cached vault."""
        return json.dumps(self.__dict__, sort_keys=True)


@dataclass(frozen=True)
class GeneratedCaller:
    """One generated caller, as the benchmark needs it (the number stays out of the vault)."""

    e164: str
    key: str
    relpath: str


def _date(rng: random.Random, start: dt.date, end: dt.date) -> dt.date:
    return start + dt.timedelta(days=rng.randint(0, max(0, (end - start).days)))


def _fill(rng: random.Random, template: str) -> str:
    return template.format(
        pet=rng.choice(PETS),
        nick=rng.choice(FIRST)[:3],
        topic=rng.choice(TOPICS),
        kid1=rng.choice(FIRST),
        kid2=rng.choice(FIRST),
        place=rng.choice(PLACES),
        month=rng.choice(("March", "June", "September", "December")),
        day=rng.randint(1, 28),
        first=rng.choice(FIRST),
        last=rng.choice(LAST),
    )


def _conversation_id(rng: random.Random) -> str:
    return "conv_" + "".join(rng.choices(string.ascii_lowercase + string.digits, k=28))


@functools.lru_cache(maxsize=4096)
def _scalar(name: str) -> str:
    """A name as the service writes it (names repeat, and YAML's emitter is slow)."""
    return edits.yaml_scalar(name)


def _render_caller(rng: random.Random, key: str, today: dt.date, hand: bool) -> tuple[str, str]:
    """A caller file's text and the caller's name."""
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    count = rng.randint(1, 14)
    first = _date(rng, today - dt.timedelta(days=720), today - dt.timedelta(days=2))
    last = _date(rng, first, today - dt.timedelta(days=1))
    facts = [_fill(rng, f) for f in rng.sample(FACTS, rng.randint(2, 6))]
    calls = []
    for day in sorted(_date(rng, first, last) for _ in range(min(count, rng.randint(2, 6)))):
        when = f"{day.isoformat()} {rng.randint(8, 18):02d}:{rng.choice((0, 5, 15, 30, 45)):02d}"
        calls.append(f"- {when} · {_fill(rng, rng.choice(SUMMARIES))} ({_conversation_id(rng)})")
    notes = [f"- {_date(rng, first, last).isoformat()}: {n}" for n in rng.sample(NOTES, rng.randint(0, 2))]
    if hand:
        head = _hand_frontmatter(rng, key, name, count, first, last)
    else:
        head = (
            f'phone_hash: "{key}"\nname: {_scalar(name)}\naliases:\n  - {_scalar(name)}\n'
            f"call_count: {count}\nfirst_call: {first.isoformat()}\nlast_call: {last.isoformat()}\n"
        )
        if rng.random() < 0.02:
            head += "language: es\n"
    body = f"# {name}\n\n## Facts\n" + "".join(f"- {f}\n" for f in facts)
    body += "\n## Calls\n" + "".join(f"{c}\n" for c in calls)
    body += "\n## Notes\n" + "".join(f"{n}\n" for n in notes)
    if hand and rng.random() < 0.5:
        body += "\nFree text the front desk wrote: call back on the mobile, not the landline.\n"
    return f"---\n{head}---\n{body}", name


def _hand_frontmatter(rng: random.Random, key: str, name: str, count: int, first: dt.date, last: dt.date) -> str:
    """Frontmatter as a person leaves it: comments, other quoting and order, flow lists, unknown keys."""
    quoted = "'" + name.replace("'", "''") + "'"
    entries = [
        f"phone_hash: '{key}'  # do not edit" if rng.random() < 0.5 else f'phone_hash: "{key}"',
        f"name: {quoted}" if rng.random() < 0.5 else f'name: "{name}"',
        f"aliases: [{quoted}, {rng.choice(FIRST)[:3]}]" if rng.random() < 0.5 else f"aliases:\n- {quoted}",
        f"call_count: {count}",
        f'first_call: "{first.isoformat()}"' if rng.random() < 0.5 else f"first_call: {first.isoformat()}",
        f"last_call: {last.isoformat()}",
        f"tags: [{rng.choice(('vip', 'new', 'dentist'))}, followup]",
        f"company: {rng.choice(LAST)} & Sons",
        f"preferred_contact: {rng.choice(('morning', 'evening', 'text'))}",
        "account_no: '0123'",
        f"vip: {rng.choice(('yes', 'no', 'true'))}",
    ]
    rng.shuffle(entries)
    lines = [rng.choice(COMMENTS), *entries]
    if rng.random() < 0.3:
        lines.insert(rng.randint(1, len(lines)), "")
    return "\n".join(lines) + "\n"


def _daily_note(rng: random.Random, day: dt.date) -> str:
    lines = [f"- {_fill(rng, t)}" for t in rng.sample(DAILY, rng.randint(1, 3))]
    return f"# {day.isoformat()}\n\n" + "\n".join(lines) + "\n"


def _git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="memory-bridge bench",
        GIT_AUTHOR_EMAIL="bench@memory-bridge.invalid",
        GIT_COMMITTER_NAME="memory-bridge bench",
        GIT_COMMITTER_EMAIL="bench@memory-bridge.invalid",
    )
    return env


def git(root: Path, *args: str) -> str:
    """Run git in a vault with no global or system config and a fixed identity; returns stdout."""
    proc = subprocess.run(["git", "-C", str(root), *args], env=_git_env(), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args[:2])} failed in {root}: {proc.stderr.strip()}")
    return proc.stdout


def generate(root: Path, params: Params) -> list[GeneratedCaller]:
    """Write a fresh vault at `root` (which must not exist) and commit it; returns its callers."""
    rng = random.Random(params.seed)
    today = dt.date.fromisoformat(params.today)
    key = params.key.encode()
    (root / markdown.CALLERS).mkdir(parents=True)
    (root / markdown.NOTES).mkdir()
    shutil.copyfile(vault.STARTER_SOUL, root / markdown.SOUL)
    (root / ".gitignore").write_text(vault.VAULT_GITIGNORE, encoding="utf-8")
    numbers = rng.sample(range(2_000_000, 10_000_000), params.callers)
    callers = []
    files: list[tuple[str, bytes]] = [(markdown.SOUL, (root / markdown.SOUL).read_bytes())]
    files.append((".gitignore", (root / ".gitignore").read_bytes()))
    for n in numbers:
        e164 = f"+1415{n}"
        caller_key = phone.caller_key(e164, key)
        hand = rng.random() < HAND_FORMATTED_SHARE
        text, name = _render_caller(rng, caller_key, today, hand)
        if rng.random() < RENAMED_SHARE:
            relpath = f"{markdown.CALLERS}/{name} {caller_key[:4]}.md"
        else:
            relpath = f"{markdown.CALLERS}/{phone.short(caller_key)}.md"
        files.append((relpath, text.encode("utf-8")))
        callers.append(GeneratedCaller(e164, caller_key, relpath))
    for back in range(-1, DAILY_NOTE_DAYS):  # -1: a note for tomorrow, which waits for its day
        day = today - dt.timedelta(days=back)
        files.append((f"{markdown.NOTES}/{day.isoformat()}.md", _daily_note(rng, day).encode("utf-8")))
    for relpath, data in files:
        with open(root / relpath, "wb") as fh:
            fh.write(data)
    _commit(root, files, f"benchmark vault: {params.callers} callers\n\nSource: cli\n")
    return callers


def _commit(root: Path, files: list[tuple[str, bytes]], message: str) -> None:
    """Commit `files` as the first commit of a new repository at `root`, straight into a pack.

    `git fast-import` writes one pack instead of 100k loose objects (`git add` then `git repack`
    takes about 4x longer); `git reset` then builds the index with fresh stat data, so the service
    starts on a clean, fully indexed work tree, as a vault in service would be.
    """
    git(root, "init", "-q", "-b", "main")
    stamp = int(time.time())
    who = "memory-bridge bench <bench@memory-bridge.invalid>"
    msg = message.encode()
    chunks = [f"commit refs/heads/main\nauthor {who} {stamp} +0000\ncommitter {who} {stamp} +0000\n".encode()]
    chunks.append(b"data %d\n%s\n" % (len(msg), msg))
    for relpath, data in files:
        chunks.append(b"M 100644 inline %s\ndata %d\n%s\n" % (relpath.encode(), len(data), data))
    proc = subprocess.run(
        ["git", "-C", str(root), "fast-import", "--quiet"],
        input=b"".join(chunks),
        env=_git_env(),
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"git fast-import failed in {root}: {proc.stderr.decode(errors='replace')}")
    git(root, "reset", "-q")


def check_sample(root: Path, callers: list[GeneratedCaller], sample: int = 300) -> None:
    """Parse a sample of generated callers with the service's parser; raise if any is not understood."""
    rng = random.Random(0)
    for caller in rng.sample(callers, min(sample, len(callers))):
        record = parse.parse_caller((root / caller.relpath).read_text(encoding="utf-8"))
        if record.phone_hash != caller.key or not record.facts or not record.calls or not record.name:
            raise AssertionError(f"generated caller {caller.relpath} does not parse as intended: {record}")


def cached_vault(cache: Path, name: str, params: Params, log: object = print) -> tuple[Path, list[GeneratedCaller]]:
    """A generated vault under `cache/name`, reused when its stamp matches and its tree is clean.

    Layout: `cache/name/vault` (the vault), `cache/name/stamp.json`, `cache/name/callers.tsv`
    (E.164 number, key, file of every caller; kept outside the vault).
    """
    home = cache / name
    root, stamp, table = home / "vault", home / "stamp.json", home / "callers.tsv"
    if stamp.is_file() and stamp.read_text() == params.stamp() and table.is_file() and (root / ".git").is_dir():
        if not git(root, "status", "--porcelain", "--untracked-files=all").strip():
            rows = [line.split("\t") for line in table.read_text(encoding="utf-8").splitlines() if line]
            return root, [GeneratedCaller(*row) for row in rows]
        log(f"  cached vault {root} has changes; regenerating it")  # type: ignore[operator]
    if home.exists():
        # Deleting 100k files right before measuring would slow the disk (discards); the caller
        # empties the trash when the run is over.
        trash = cache / ".trash"
        trash.mkdir(exist_ok=True)
        home.rename(trash / f"{name}-{time.time_ns()}")
    home.mkdir(parents=True)
    started = time.monotonic()
    callers = generate(root, params)
    check_sample(root, callers)
    table.write_text("".join(f"{c.e164}\t{c.key}\t{c.relpath}\n" for c in callers), encoding="utf-8")
    stamp.write_text(params.stamp())
    log(f"  generated {params.callers} callers in {root} ({time.monotonic() - started:.1f} s)")  # type: ignore[operator]
    return root, callers


def empty_trash(cache: Path) -> None:
    """Delete vaults that were replaced during a run (see `cached_vault`)."""
    shutil.rmtree(cache / ".trash", ignore_errors=True)


def working_copy(source: Path, dest: Path) -> Path:
    """A scratch copy of a cached vault for scenarios that write, with git's stat cache refreshed."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(source), str(dest)], check=True)
    git(dest, "update-index", "-q", "--refresh")
    return dest


def main() -> None:
    """Generate one vault by hand: `python -m benchmarks.generate --callers N DIR`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="the vault folder to create (must not exist)")
    parser.add_argument("--callers", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--key", default="bench-phone-hash-key", help="PHONE_HASH_KEY the server will use")
    args = parser.parse_args()
    params = Params(args.callers, args.seed, args.key, dt.datetime.now(dt.UTC).date().isoformat())
    started = time.monotonic()
    callers = generate(args.dest, params)
    check_sample(args.dest, callers)
    print(f"{len(callers)} callers in {args.dest} ({time.monotonic() - started:.1f} s)")


if __name__ == "__main__":
    main()
