"""index.py: the in-memory index and what each file result means for it (SPEC §2, §4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.index import FALLBACK_SOUL, Index
from server.records import Caller, DailyNote, Soul
from server.vault import Loaded, Vault

X = "ab" * 32
Y = "cd" * 32


def caller_text(key: str, name: str = "Maria", facts: tuple[str, ...] = ()) -> str:
    items = "".join(f"- {f}\n" for f in facts)
    return f'---\nphone_hash: "{key}"\nname: {name}\n---\n# {name}\n\n## Facts\n{items}'


class Disk:
    """A real vault on disk; `put` writes a file and returns what the vault reads back from it."""

    def __init__(self, root: Path) -> None:
        self.vault = Vault(root)
        self.vault.ensure_layout()

    def put(self, relpath: str, text: str) -> Loaded:
        path = self.vault.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        loaded = self.vault.load(relpath)
        assert loaded is not None
        return loaded

    def remove(self, relpath: str) -> None:
        (self.vault.root / relpath).unlink()
        assert self.vault.load(relpath) is None

    def seq(self) -> int:
        return self.vault.next_seq()


@pytest.fixture
def disk(tmp_path: Path) -> Disk:
    return Disk(tmp_path / "vault")


@pytest.fixture
def index() -> Index:
    return Index()


def test_empty_index(index: Index) -> None:
    assert index.caller(X) is None
    assert index.caller_path(X) is None
    assert index.caller_count == 0
    assert index.soul is FALLBACK_SOUL
    assert index.soul.body
    assert index.note("2026-11-25") is None
    assert index.errors() == {}


def test_apply_a_caller_and_update_it(disk: Disk, index: Index) -> None:
    assert index.apply("callers/m.md", disk.put("callers/m.md", caller_text(X, facts=("a",))), disk.seq())
    first = index.caller(X)
    assert isinstance(first, Caller) and first.facts == ("a",)
    assert index.caller_path(X) == "callers/m.md"
    assert index.caller_count == 1
    assert index.apply("callers/m.md", disk.put("callers/m.md", caller_text(X, facts=("a", "b"))), disk.seq())
    second = index.caller(X)
    assert second is not None and second.facts == ("a", "b")
    assert index.caller_count == 1
    assert index.files["callers/m.md"].digest == disk.vault.load("callers/m.md").digest  # type: ignore[union-attr]


def test_remove(disk: Disk, index: Index) -> None:
    index.apply("callers/m.md", disk.put("callers/m.md", caller_text(X)), disk.seq())
    disk.remove("callers/m.md")
    assert index.apply("callers/m.md", None, disk.seq())
    assert index.caller(X) is None
    assert index.caller_path(X) is None
    assert index.caller_count == 0
    assert "callers/m.md" not in index.files
    assert index.apply("callers/never.md", None, disk.seq())  # removing what was never there is fine


def test_a_path_is_taken_whatever_its_case_while_a_file_holds_it(disk: Disk, index: Index) -> None:
    assert not index.path_taken("callers/Maria Lopez.md")
    index.apply("callers/Maria Lopez.md", disk.put("callers/Maria Lopez.md", caller_text(X)), disk.seq())
    assert index.path_taken("callers/maria lopez.md") and index.path_taken("callers/MARIA LOPEZ.md")
    index.apply("callers/Maria Lopez.md", disk.put("callers/Maria Lopez.md", caller_text(X, facts=("a",))), disk.seq())
    disk.remove("callers/Maria Lopez.md")
    index.apply("callers/Maria Lopez.md", None, disk.seq())
    assert not index.path_taken("callers/maria lopez.md")  # one removal frees it, however often it was updated


def test_rename_new_path_seen_first(disk: Disk, index: Index) -> None:
    index.apply("callers/abababababab.md", disk.put("callers/abababababab.md", caller_text(X)), disk.seq())
    # An editor's rename: the new name appears, then the old one goes.
    index.apply("callers/Maria Lopez.md", disk.put("callers/Maria Lopez.md", caller_text(X)), disk.seq())
    assert index.caller_path(X) == "callers/abababababab.md"  # until the old file is gone
    disk.remove("callers/abababababab.md")
    index.apply("callers/abababababab.md", None, disk.seq())
    assert index.caller_path(X) == "callers/Maria Lopez.md"
    assert index.caller(X) is not None
    assert index.errors() == {}
    assert index.caller_count == 1


def test_rename_old_path_gone_first(disk: Disk, index: Index) -> None:
    index.apply("callers/a.md", disk.put("callers/a.md", caller_text(X)), disk.seq())
    text = (disk.vault.root / "callers/a.md").read_text()
    disk.remove("callers/a.md")
    index.apply("callers/a.md", None, disk.seq())
    assert index.caller(X) is None
    index.apply("callers/sub/b.md", disk.put("callers/sub/b.md", text), disk.seq())
    assert index.caller_path(X) == "callers/sub/b.md"
    assert index.errors() == {}


def test_changing_phone_hash_moves_the_caller(disk: Disk, index: Index) -> None:
    index.apply("callers/m.md", disk.put("callers/m.md", caller_text(X)), disk.seq())
    index.apply("callers/m.md", disk.put("callers/m.md", caller_text(Y)), disk.seq())
    assert index.caller(X) is None
    assert index.caller_path(Y) == "callers/m.md"
    assert index.caller_count == 1


def test_broken_file_keeps_last_good_record(disk: Disk, index: Index) -> None:
    index.apply("callers/m.md", disk.put("callers/m.md", caller_text(X, facts=("good",))), disk.seq())
    good = index.caller(X)
    broken = disk.put("callers/m.md", '---\nphone_hash: "' + X + '"\nname: [oops\n---\n')
    assert broken.error
    assert index.apply("callers/m.md", broken, disk.seq())
    assert index.caller(X) is good  # still in service
    errors = index.errors()
    assert list(errors) == ["callers/m.md"]
    assert "not valid YAML" in errors["callers/m.md"]
    assert index.files["callers/m.md"].digest == broken.digest  # the broken bytes are known, not re-read
    # Fixed again: the error goes and the new version is served.
    index.apply("callers/m.md", disk.put("callers/m.md", caller_text(X, facts=("fixed",))), disk.seq())
    assert index.errors() == {}
    assert index.caller(X).facts == ("fixed",)  # type: ignore[union-attr]


def test_file_broken_from_the_start_is_listed_and_serves_nothing(disk: Disk, index: Index) -> None:
    index.apply("callers/x.md", disk.put("callers/x.md", "---\nname: no key\n---\n"), disk.seq())
    assert index.caller_count == 0
    assert "phone_hash" in index.errors()["callers/x.md"]
    index.apply("callers/x.md", None, disk.seq())
    assert index.errors() == {}


def test_broken_file_losing_its_hash_keeps_the_caller(disk: Disk, index: Index) -> None:
    index.apply("callers/m.md", disk.put("callers/m.md", caller_text(X)), disk.seq())
    index.apply("callers/m.md", disk.put("callers/m.md", "---\nname: Maria\n---\n"), disk.seq())
    assert index.caller(X) is not None
    assert "callers/m.md" in index.errors()


def test_link_or_unreadable_is_not_a_deletion(disk: Disk, index: Index, tmp_path: Path) -> None:
    index.apply("callers/m.md", disk.put("callers/m.md", caller_text(X)), disk.seq())
    (disk.vault.root / "callers/m.md").unlink()
    outside = tmp_path / "outside.md"
    outside.write_text(caller_text(Y))
    (disk.vault.root / "callers/m.md").symlink_to(outside)
    loaded = disk.vault.load("callers/m.md")
    assert loaded is not None and loaded.error
    index.apply("callers/m.md", loaded, disk.seq())
    assert index.caller(X) is not None
    assert index.caller(Y) is None
    assert "link" in index.errors()["callers/m.md"]


def test_duplicate_phone_hash(disk: Disk, index: Index) -> None:
    index.apply("callers/a.md", disk.put("callers/a.md", caller_text(X, "First")), disk.seq())
    index.apply("callers/b.md", disk.put("callers/b.md", caller_text(X, "Second")), disk.seq())
    assert index.caller(X).name == "First"  # type: ignore[union-attr]
    assert index.caller_path(X) == "callers/a.md"
    assert index.caller_count == 1
    errors = index.errors()
    assert list(errors) == ["callers/b.md"]
    assert "callers/a.md" in errors["callers/b.md"]
    # Re-reading the duplicate does not change who is served.
    index.apply("callers/b.md", disk.put("callers/b.md", caller_text(X, "Second again")), disk.seq())
    assert index.caller(X).name == "First"  # type: ignore[union-attr]
    assert "callers/b.md" in index.errors()
    # Editing the first keeps it in service.
    index.apply("callers/a.md", disk.put("callers/a.md", caller_text(X, "First v2")), disk.seq())
    assert index.caller(X).name == "First v2"  # type: ignore[union-attr]
    # Removing the first promotes the second, and its error goes.
    disk.remove("callers/a.md")
    index.apply("callers/a.md", None, disk.seq())
    assert index.caller(X).name == "Second again"  # type: ignore[union-attr]
    assert index.caller_path(X) == "callers/b.md"
    assert index.errors() == {}


def test_duplicate_promoted_when_the_first_changes_hash(disk: Disk, index: Index) -> None:
    index.apply("callers/a.md", disk.put("callers/a.md", caller_text(X, "First")), disk.seq())
    index.apply("callers/b.md", disk.put("callers/b.md", caller_text(X, "Second")), disk.seq())
    index.apply("callers/a.md", disk.put("callers/a.md", caller_text(Y, "First")), disk.seq())
    assert index.caller_path(X) == "callers/b.md"
    assert index.caller_path(Y) == "callers/a.md"
    assert index.errors() == {}
    assert index.caller_count == 2


def test_three_duplicates_report_the_current_owner(disk: Disk, index: Index) -> None:
    for name in ("a", "b", "c"):
        index.apply(f"callers/{name}.md", disk.put(f"callers/{name}.md", caller_text(X, name)), disk.seq())
    assert set(index.errors()) == {"callers/b.md", "callers/c.md"}
    disk.remove("callers/a.md")
    index.apply("callers/a.md", None, disk.seq())
    assert index.caller_path(X) == "callers/b.md"
    errors = index.errors()
    assert list(errors) == ["callers/c.md"]
    assert "callers/b.md" in errors["callers/c.md"]  # not the file that is gone
    assert "callers/a.md" not in errors["callers/c.md"]
    disk.remove("callers/b.md")
    index.apply("callers/b.md", None, disk.seq())
    assert index.caller_path(X) == "callers/c.md"
    assert index.errors() == {}


def test_older_seq_never_overwrites_newer(disk: Disk, index: Index) -> None:
    old_seq = disk.seq()
    old = disk.put("callers/m.md", caller_text(X, facts=("old",)))
    new_seq = disk.seq()
    new = disk.put("callers/m.md", caller_text(X, facts=("new",)))
    assert index.apply("callers/m.md", new, new_seq)
    assert index.apply("callers/m.md", old, old_seq) is False
    assert index.caller(X).facts == ("new",)  # type: ignore[union-attr]
    assert index.files["callers/m.md"].seq == new_seq
    # An old deletion does not remove a newer version either.
    assert index.apply("callers/m.md", None, old_seq) is False
    assert index.caller(X) is not None
    # The same seq applies (a write and its own read-back).
    assert index.apply("callers/m.md", new, new_seq)


def test_older_read_does_not_resurrect_a_newer_deletion(disk: Disk, index: Index) -> None:
    index.apply("callers/m.md", disk.put("callers/m.md", caller_text(X)), disk.seq())
    stale_seq = disk.seq()
    stale = disk.vault.load("callers/m.md")  # read before the deletion...
    disk.remove("callers/m.md")
    assert index.apply("callers/m.md", None, disk.seq())
    assert index.apply("callers/m.md", stale, stale_seq) is False  # ...applied after it
    assert index.caller(X) is None
    assert "callers/m.md" not in index.files
    # A newer version of the file comes back normally.
    assert index.apply("callers/m.md", disk.put("callers/m.md", caller_text(X)), disk.seq())
    assert index.caller(X) is not None


def test_soul(disk: Disk, index: Index) -> None:
    loaded = disk.vault.load("soul.md")
    assert loaded is not None and loaded.error is None
    index.apply("soul.md", loaded, disk.seq())
    starter = index.soul
    assert isinstance(starter, Soul) and starter is not FALLBACK_SOUL
    index.apply("soul.md", disk.put("soul.md", "---\nfirst_message: Hi\nbusiness_name: Acme\n---\nBe kind.\n"), 0)
    assert index.soul is starter  # seq 0 is older than what was applied
    index.apply("soul.md", disk.put("soul.md", "---\nfirst_message: Hi\nbusiness_name: Acme\n---\nBe kind.\n"), 99)
    assert index.soul.body == "Be kind."
    assert index.soul.variables == {"business_name": "Acme"}
    good = index.soul
    index.apply("soul.md", disk.put("soul.md", "---\nfirst_message: [\n---\nBroken.\n"), 100)
    assert index.soul is good
    assert "soul.md" in index.errors()
    index.apply("soul.md", None, 101)
    assert index.soul is FALLBACK_SOUL


def test_notes(disk: Disk, index: Index) -> None:
    index.apply("notes/2026-11-25.md", disk.put("notes/2026-11-25.md", "# 2026-11-25\n\n- closed at 3\n"), disk.seq())
    assert index.note("2026-11-25") == DailyNote("2026-11-25", "- closed at 3")
    index.apply("notes/2026-11-25.md", disk.put("notes/2026-11-25.md", "- open late\n"), disk.seq())
    assert index.note("2026-11-25") == DailyNote("2026-11-25", "- open late")
    index.apply("notes/2026-11-26.md", disk.put("notes/2026-11-26.md", "tomorrow\n"), disk.seq())
    assert set(index.notes) == {"2026-11-25", "2026-11-26"}
    broken = disk.put("notes/2026-11-25.md", "---\na: [\n---\nx\n")
    index.apply("notes/2026-11-25.md", broken, disk.seq())
    assert index.note("2026-11-25") == DailyNote("2026-11-25", "- open late")
    assert "notes/2026-11-25.md" in index.errors()
    disk.remove("notes/2026-11-25.md")
    index.apply("notes/2026-11-25.md", None, disk.seq())
    assert index.note("2026-11-25") is None
    assert index.note("2026-11-26") is not None
    assert index.errors() == {}


def test_many_callers(disk: Disk, index: Index) -> None:
    keys = [f"{i:064x}" for i in range(1, 51)]
    for i, key in enumerate(keys):
        index.apply(f"callers/{i}.md", disk.put(f"callers/{i}.md", caller_text(key, f"C{i}")), disk.seq())
    assert index.caller_count == 50
    assert all(index.caller(key).name == f"C{i}" for i, key in enumerate(keys))  # type: ignore[union-attr]
    for i in range(0, 50, 2):
        disk.remove(f"callers/{i}.md")
        index.apply(f"callers/{i}.md", None, disk.seq())
    assert index.caller_count == 25
    assert [index.caller(key) is not None for key in keys] == [i % 2 == 1 for i in range(50)]
