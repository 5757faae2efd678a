"""Who is calling: caller IDs to E.164 to vault keys, and the known caller behind a key (SPEC §6, §7).

Pure lookups over the index and the phone-hash key; the call path asks here first. Callers who call
again soon skip parsing and hashing (a small cache of recent identities).
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable

import msgspec

from server import phone
from server.config import Settings
from server.index import Index
from server.ownnumbers import OwnNumbers
from server.phone import CallerId
from server.records import Caller

# Call SIDs remembered from personalize for post-call events that carry no number.
_RECENT_CALLS = 10_000
# Recent callers whose identity is kept: a flood of calls comes from a few thousand callers at most,
# and every entry is memory held for good.
_IDENTITIES = 4_096


class Identity:
    """A caller ID resolved to a vault key. `key` is None for withheld and non-phone callers.

    `outbound` is set when `caller_id` was one of our own numbers (SPEC §12): the other party is the
    called number, or, with no number configured, nobody (the neutral answer, nothing recorded).
    """

    __slots__ = ("caller_id", "key", "legacy", "outbound")

    def __init__(self, caller_id: CallerId, key: str | None, legacy: str | None, outbound: bool = False) -> None:
        self.caller_id = caller_id
        self.key = key
        self.legacy = legacy
        self.outbound = outbound


class WriteTarget(msgspec.Struct, frozen=True):
    """Whose memory a write goes to: the key, and for a new caller named by number its E.164 and legacy key."""

    key: str
    e164: str | None = None
    legacy: str | None = None


def _short_text(value: object) -> bool:
    # What may be a cache key: junk must not fill the cache.
    return isinstance(value, str) and len(value) <= phone.MAX_CHARS


class Identities:
    """Resolves caller IDs and `{caller}` values against one vault's key and index."""

    def __init__(
        self,
        settings: Settings,
        index: Index,
        key: bytes,
        own: OwnNumbers | None = None,
        blocked: Callable[[str, bool], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.index = index
        self._key = key
        self.own = own if own is not None else OwnNumbers(settings.agent_numbers)
        # Whether a caller key is on the do-not-remember list (SPEC §14): such a caller is nobody.
        self._blocked = blocked
        # call_sid -> caller key seen at personalize time, for post-call events without a number.
        self._calls: OrderedDict[str, str] = OrderedDict()
        self._cached = functools.lru_cache(maxsize=_IDENTITIES)(self._identify)
        self._recent_calls = _RECENT_CALLS
        # Our numbers are few: the called numbers seen after each answer are normalised once.
        self._e164_of = functools.lru_cache(maxsize=256)(self._e164)
        # Every answered call re-learns its called number (one of a handful): one HMAC per number, not per call.
        self._own_key_of = functools.lru_cache(maxsize=256)(self._own_key)

    def identify(self, caller_id: object, called_number: object = None) -> Identity:
        """Resolve the other party of a call; outbound calls (our own number as caller) use `called_number`."""
        if _short_text(caller_id) and (called_number is None or _short_text(called_number)):
            who = self._cached(caller_id, called_number)
        else:
            who = self._identify(caller_id, called_number)
        # Looked at on every call, after the cache: a block made by another process counts at once.
        if who.key is not None and self.blocked(who.key):
            return Identity(who.caller_id, None, None)  # the neutral answer, and nothing recorded
        return who

    def blocked(self, key: str, recheck: bool = False) -> bool:
        """Whether the caller with this key is on the do-not-remember list (`recheck`: before a write, look now)."""
        return self._blocked is not None and self._blocked(key, recheck)

    def _identify(self, caller_id: object, called_number: object) -> Identity:
        region = self.settings.default_region or phone.region_of(called_number)
        parsed = phone.classify(caller_id, region)
        if parsed.e164 is None:
            return Identity(parsed, None, None)
        own = self.own
        if parsed.e164 not in own.configured:
            key = phone.caller_key(parsed.e164, self._key)
            if key not in own.learned:
                return Identity(parsed, key, phone.legacy_key(parsed.e164))
            if not own.any_configured:
                # A number only learned to be ours, with none configured: whom the call is for is not
                # certain enough to give anyone's memory (SPEC §12). The neutral answer, nothing recorded.
                return Identity(parsed, None, None, outbound=True)
        # Our own number calls out: the other party is the called number, unless that is ours too.
        other = phone.classify(called_number, region)
        if other.e164 is None or other.e164 in own.configured:
            return Identity(other, None, None, outbound=True)
        key = phone.caller_key(other.e164, self._key)
        if key in own.learned:
            return Identity(other, None, None, outbound=True)
        return Identity(other, key, phone.legacy_key(other.e164), outbound=True)

    def _e164(self, number: str) -> str | None:
        return phone.classify(number, self.settings.default_region or phone.region_of(number)).e164

    def share_caches(self, vaults: int) -> None:
        """Shrink the caches of recent identities and call SIDs to a share of one process's, for `vaults` vaults.

        A process serving a hundred tenants keeps about as many recent callers in all as one serving one vault.
        """
        share = max(1, vaults)
        self._cached = functools.lru_cache(maxsize=max(64, _IDENTITIES // share))(self._identify)
        self._recent_calls = max(256, _RECENT_CALLS // share)

    def set_configured(self, numbers: tuple[str, ...]) -> None:
        """Our configured numbers changed (a tenant.md was edited): resolve callers anew."""
        self.own.configured = frozenset(numbers)
        self._cached.cache_clear()

    def number_key(self, number: object) -> str | None:
        """The caller key of a phone number as it is (no own-number rule), or None if it is not one."""
        if not isinstance(number, str) or not _short_text(number):
            return None
        e164 = self._e164_of(number)
        return phone.caller_key(e164, self._key) if e164 is not None else None

    def learn_own(self, number: object) -> None:
        """Remember `number` as one of ours (the called number of an inbound call, an agent's number)."""
        if not isinstance(number, str) or not _short_text(number):
            return
        e164 = self._e164_of(number)
        if e164 is None or e164 in self.own.configured:
            return
        if self.own.learn(self._own_key_of(e164)):
            self._cached.cache_clear()  # identities resolved before may have used it as a caller

    def _own_key(self, e164: str) -> str:
        return phone.caller_key(e164, self._key)

    def unlearn_own(self, number: object) -> None:
        """Forget `number` as ours: a finished call named it as the other party."""
        key = self.number_key(number)
        if key is not None and self.own.unlearn(key):
            self._cached.cache_clear()

    def after_answer(self, who: Identity, called_number: object) -> None:
        """What an answered call teaches: the called number of an inbound call is one of ours."""
        if who.outbound:
            self.own.note_outbound()
            return
        if who.key is not None:
            self.learn_own(called_number)

    def raw_key(self, number: str) -> str | None:
        """The caller key of a number even when it is blocked (to erase it); None if not a usable number."""
        parsed = phone.classify(number, self.settings.default_region)
        return phone.caller_key(parsed.e164, self._key) if parsed.e164 is not None else None

    def clear_cached(self) -> None:
        """Forget the identities kept for recent callers (one of them was just erased or blocked)."""
        self._cached.cache_clear()
        self._calls.clear()

    def lookup(self, who: Identity) -> Caller | None:
        """The caller's record, also for callers imported with the predecessor's plain hash."""
        if who.key is None:
            return None
        found = self.index.caller(who.key)
        if found is None and who.legacy is not None:
            found = self.index.caller(who.legacy)
        return found

    def resolve(self, caller: str) -> str | None:
        """A `{caller}` value (phone hash or phone number) to the key of a known caller."""
        text = caller.strip().lower()
        if phone.is_caller_key(text):
            return text if self.index.caller_path(text) else None
        who = self.identify(caller)
        if who.key is None:
            return None
        for key in (who.key, who.legacy):
            if key and self.index.caller_path(key):
                return key
        return None

    def write_target(self, caller: str) -> WriteTarget | None:
        """Whose memory a write addressed to `caller` goes to.

        A known caller (by hash or number), or a new caller named by phone number; None for an
        unknown hash and for anything that is not a usable phone number.
        """
        if (key := self.resolve(caller)) is not None:
            return WriteTarget(key)
        who = self.identify(caller)
        if who.key is None or phone.is_caller_key(caller.strip().lower()):
            return None
        return WriteTarget(who.key, who.caller_id.e164, who.legacy)

    def hash_number(self, number: str) -> str | None:
        """The caller key for a number, or None if it is not a usable phone number."""
        return self.identify(number).key

    def remember_call_sid(self, call_sid: str | None, key: str) -> None:
        """Note which caller a call belongs to, for post-call events that carry no number."""
        if not call_sid:
            return
        self._calls[call_sid] = key
        self._calls.move_to_end(call_sid)
        while len(self._calls) > self._recent_calls:
            self._calls.popitem(last=False)

    def key_for_call_sid(self, call_sid: str | None) -> str | None:
        """The caller key noted for a call SID at personalize time."""
        return self._calls.get(call_sid) if call_sid else None
