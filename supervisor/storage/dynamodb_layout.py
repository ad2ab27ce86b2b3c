"""Where each record lives in the journal's one DynamoDB table: the key of every item.

The table's key is ``pk`` (string, partition key) + ``sk`` (string, sort key); ``ttl`` (epoch seconds) is its
TTL attribute. ``<shard>`` is a shard's scope (``account/region``; ``-`` for the implicit shard); ``<x>`` parts
are percent-encoded where they may hold ``#`` (:func:`~supervisor.storage.dynamodb_codec.key_part`). Times are
ISO-8601 UTC with microseconds and ``Z``, so sort keys made of times sort by instant.

======================  ===========================  ===============================  ==========================
item                    pk                           sk                               ttl (expires)
======================  ===========================  ===============================  ==========================
shard registry          ``SHARD``                    ``<shard>``                      never
shard lease             ``LEASE``                    ``<shard>``                      never
replica heartbeat       ``REPLICA``                  ``<replica>``                    1 day after it lapses
escalation (claim)      ``S#<shard>#ESC``            ``<target key>``                 retention after done
event                   ``S#<shard>#EV#<day>``       ``<time>#<seq>``                 retention after ``time``
event, by target        ``S#<shard>#TGT#<id>``       ``<time>#<seq>``                 retention after ``time``
days with events        ``S#<shard>#EVDAY``          ``<day>``                        retention after the day
counted session         ``S#<shard>#SPEND``          ``<session id>``                 retention after it ended
open session            ``S#<shard>#OPEN_SESSION``   ``<session id>``                 deleted when it ends
accounting checkpoint   ``S#<shard>#META``           ``CHECKPOINT``                   never
watched target          ``S#<shard>#WATCH``          ``<target key>``                 deleted when unwatched
disabled workgroup      ``S#<shard>#DISABLED``       ``<workgroup>#<episode id>``     never
one-off notice          ``NOTICE#<notice key>``      ``NOTICE``                       retention after marking
budget spend bucket     ``B#<budget>#SPEND``         ``<bucket start>``               never (pruned by budgets)
episode of a period     ``B#<budget>#EPISODE``       ``<at percent>#<period key>``    never
episode                 ``EPISODE``                  ``<episode id, 12 digits>``      never
open episode            ``OPEN_EPISODE``             ``<budget>#<at percent>``        deleted when it closes
episode id counter      ``COUNTER``                  ``EPISODE``                      never
======================  ===========================  ===============================  ==========================

Why these partitions:

- **Every list is one Query of one partition** (a shard's claims, open sessions, watch list, disabled
  workgroups; open episodes; leases; live replicas; a budget's buckets in a period); nothing scans the table.
  The root view (the CLI) reads each shard named in the shard registry, which a view writes to once per
  process before its first write. Recent events: the shard's ``EVDAY`` partition names the days that have
  events, newest first, and each day is a partition of its own (one partition per shard and day keeps any one
  partition's write rate to one shard's events); events about one target are also written (in the same
  transaction) under ``TGT#<id>`` for its id and its session's, so ``--target`` is a Query too.
- **What may expire**: events and their indexes, settled claims (their target ids never come back: Athena ids
  are unique, workgroup targets carry their budget period), ended sessions' counted spend, one-off notices, dead
  replicas' heartbeats. **What never does**: leases (their expiry is the ``lease_expires_at`` attribute, read
  by the replicas; TTL would delete a lease and with it the fencing token's history), open escalations, open
  sessions, the checkpoint, episodes (their count names rolling budgets' episodes), and budget buckets, which
  the budgets activity prunes itself once they are before every period that could still need them (their
  expiry depends on the budget's period, which the store does not know).
"""

from __future__ import annotations

from supervisor.core.model import TargetKey
from supervisor.storage.dynamodb_codec import from_key_part, key_part
from supervisor.storage.dynamodb_table import Key

IMPLICIT = "-"
SHARDS = "SHARD"
LEASES = "LEASE"
REPLICAS = "REPLICA"
EPISODES = "EPISODE"
OPEN_EPISODES = "OPEN_EPISODE"
COUNTER = Key("COUNTER", "EPISODE")


def shard_token(scope: str) -> str:
    """A shard's scope as a key part (``-`` for the implicit shard, whose scope is empty)."""
    return key_part(scope) if scope else IMPLICIT


def scope_of(token: str) -> str:
    return "" if token == IMPLICIT else from_key_part(token)


class ShardKeys:
    """The keys of one shard's items."""

    def __init__(self, scope: str) -> None:
        self.scope = scope
        self.token = shard_token(scope)
        prefix = f"S#{self.token}#"
        self.escalations = prefix + "ESC"
        self.event_days = prefix + "EVDAY"
        self.spend = prefix + "SPEND"
        self.open_sessions = prefix + "OPEN_SESSION"
        self.meta = prefix + "META"
        self.watch = prefix + "WATCH"
        self.disabled = prefix + "DISABLED"
        self._events = prefix + "EV#"
        self._by_target = prefix + "TGT#"

    @property
    def registry(self) -> Key:
        return Key(SHARDS, self.token)

    @property
    def lease(self) -> Key:
        return Key(LEASES, self.token)

    def escalation(self, key: TargetKey) -> Key:
        return Key(self.escalations, str(key))

    def events_of_day(self, day: str) -> str:
        return self._events + day

    def events_about(self, target_id: str) -> str:
        return self._by_target + key_part(target_id)

    def event_day(self, day: str) -> Key:
        return Key(self.event_days, day)

    def counted(self, session_id: str) -> Key:
        return Key(self.spend, session_id)

    def open_session(self, session_id: str) -> Key:
        return Key(self.open_sessions, session_id)

    @property
    def checkpoint(self) -> Key:
        return Key(self.meta, "CHECKPOINT")

    def disabled_workgroup(self, workgroup: str, episode_id: int) -> Key:
        return Key(self.disabled, f"{key_part(workgroup)}#{episode_number(episode_id)}")

    def disabled_prefix(self, workgroup: str) -> str:
        return f"{key_part(workgroup)}#"


def episode_number(episode_id: int) -> str:
    return f"{episode_id:012d}"


def notice(notice_key: str) -> Key:
    return Key(f"NOTICE#{key_part(notice_key)}", "NOTICE")


def budget_spend(budget: str) -> str:
    return f"B#{key_part(budget)}#SPEND"


def percent(at_percent: float) -> str:
    """A threshold in keys: the float's shortest exact text (``80.0``, ``99.5``)."""
    return repr(float(at_percent))


def episode_of_period(budget: str, at_percent: float, period_key: str) -> Key:
    return Key(f"B#{key_part(budget)}#EPISODE", f"{percent(at_percent)}#{key_part(period_key)}")


def episodes_of_budget(budget: str) -> str:
    return f"B#{key_part(budget)}#EPISODE"


def episode(episode_id: int) -> Key:
    return Key(EPISODES, episode_number(episode_id))


def open_episode(budget: str, at_percent: float) -> Key:
    return Key(OPEN_EPISODES, f"{open_episodes_of(budget)}{percent(at_percent)}")


def open_episodes_of(budget: str) -> str:
    """The sort key prefix of ``budget``'s open episodes."""
    return f"{key_part(budget)}#"


def replica(replica_id: str) -> Key:
    return Key(REPLICAS, key_part(replica_id))
