"""The Lua scripts: load a batch's inputs, apply a plan atomically (fenced), read and
count due entries.

They take their arguments as one MessagePack map (ARGV[1], decoded by Redis's built-in
cmsgpack) whose fields are named below: packing thousands of small arguments one by one in
redis-py cost ~11% of the worker's CPU, one packb call ~1/15 of that. Values that Redis
stores or adds up are sent as strings: Lua numbers are doubles and would round integers
past 2^53. The scripts build no key name: every key they touch is declared in KEYS (the
scripting rule Redis Cluster relies on) and referred to by its index there; the meta
field names come from ``state/schema.py`` through the prelude below.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

import msgpack

from retention_tracker.state.schema import (
    META_OFFSET_PREFIX,
    META_READ_WATERMARK,
    META_TOKEN,
    META_VERSION,
    META_WATERMARK,
    SIZES_BUCKETS,
    SIZES_IDS,
    SIZES_UNCOUNTED,
)


def _lua_string(text: str) -> str:
    assert text.isprintable() and "'" not in text and "\\" not in text
    return f"'{text}'"


# The meta hash's field names, as the schema spells them.
_PRELUDE = (
    f"local VERSION, WATERMARK, TOKEN, OFFSET = {_lua_string(META_VERSION)}, "
    f"{_lua_string(META_WATERMARK)}, {_lua_string(META_TOKEN)}, {_lua_string(META_OFFSET_PREFIX)}\n"
    f"local READ_WATERMARK = {_lua_string(META_READ_WATERMARK)}\n"
    f"local BUCKETS, IDS, UNCOUNTED = {_lua_string(SIZES_BUCKETS)}, {_lua_string(SIZES_IDS)}, "
    f"{_lua_string(SIZES_UNCOUNTED)}\n"
)

# KEYS[1]: the partition's meta hash; KEYS[2..]: the dedup generations' sizes, user
# buckets, dedup buckets.
# ARGV[1]: {topics = [topic, ...],
#           users = [[key_index, user_id, user_id, ...], ...]: one group per user bucket,
#           sizes = [current_key_index, previous_key_index]: the current and previous dedup
#                   generations' sizes (``Keyspace.dedup_sizes``), or [] when no id is read,
#           ids = [[key_index, id, id, ...], ...]: one group per bucket of the current
#                 dedup generation (``grouped`` below),
#           old_ids = the same ids grouped per bucket of the previous generation}
# Returns: version, watermark_ms, write token, read watermark ms, the current generation's
# recorded bucket count, the previous one's bucket count, ids and uncounted flag ('' for
# any not recorded), next offset per topic, user record per user ('' if none), then 1/0
# per id of ids, then of old_ids (already in that generation; 0 without a lookup when the
# current generation's record proves the previous one empty), users and ids in their
# groups' order.
LOAD_BATCH_LUA = _PRELUDE + """
local meta = KEYS[1]
local arg = cmsgpack.unpack(ARGV[1])
local out = {redis.call('HGET', meta, VERSION) or '0', redis.call('HGET', meta, WATERMARK) or '',
             redis.call('HGET', meta, TOKEN) or '',
             redis.call('HGET', meta, READ_WATERMARK) or '', '', '', '', ''}
local sizes, none_before = arg.sizes or {}, false
if #sizes == 2 then
  local current = redis.call('HMGET', KEYS[sizes[1]], BUCKETS, UNCOUNTED)
  local previous = redis.call('HMGET', KEYS[sizes[2]], BUCKETS, IDS, UNCOUNTED)
  out[5] = current[1] or ''
  for i = 1, 3 do out[5 + i] = previous[i] or '' end
  -- a count recorded without ids from before (state/dedup.py) was chosen on a fresh
  -- partition or after a recorded generation: the one before, unrecorded, holds no id
  none_before = current[1] and not current[2] and not previous[1]
end
for _, topic in ipairs(arg.topics) do
  out[#out + 1] = redis.call('HGET', meta, OFFSET .. topic) or ''
end
for _, group in ipairs(arg.users) do
  -- one HMGET per bucket: a call costs more than the fields it reads
  for _, record in ipairs(redis.call('HMGET', KEYS[group[1]], unpack(group, 2))) do
    out[#out + 1] = record or ''
  end
end
-- an id is remembered in the generation it arrived in, and the window spans two, each
-- with its own bucket count: the ids are looked up in each generation's buckets
for step, groups in ipairs({arg.ids, arg.old_ids or {}}) do
  for _, group in ipairs(groups) do
    if step == 2 and none_before then
      for _ = 2, #group do out[#out + 1] = 0 end
    else
      for _, found in ipairs(redis.call('HMGET', KEYS[group[1]], unpack(group, 2))) do
        out[#out + 1] = found and 1 or 0
      end
    end
  end
end
return out
"""

# KEYS[1]: the partition's meta hash; KEYS[2..]: every other key the call writes.
# ARGV[1]: {
#   version   = the partition version the plan was computed from (the fence),
#   token     = this write's token, unique to the call (state/cache.py),
#   watermark = the new event-time watermark in ms, or '' to leave it,
#   read_watermark = the new read watermark in ms (input batches), or '' to leave it,
#   offsets   = [topic, next_offset, ...],
#   users     = [[key_index, user_id, record, user_id, record, ...], ...]: per bucket,
#   counters  = [[[key_index, ...], field, delta, field, delta, ...], ...]: each delta goes
#               to its field in every key listed first (the segments of a group of users'
#               aggregate hashes of one family, or the stats hash),
#   dedup_ttl = seconds a dedup bucket lives after its last write,
#   dedup     = [[key_index, id, id, ...], ...]: per dedup bucket,
#   dedup_sizes = [key_index, buckets, uncounted, ids] or []: the written generation's
#               sizes (``Keyspace.dedup_sizes``): its bucket count to record ('' when
#               recorded already) with '1' as uncounted when recorded on state from before
#               (else ''), and the ids this call adds to it,
#   due_add   = [[bucket_key_index, index_key_index, bucket, score, member, ...], ...]: per
#               due bucket (``state/schema.py`` ``due_bucket``, ``due_index``),
#   due_remove = [[bucket_key_index, index_key_index, bucket, member, ...], ...]: likewise}
# Returns 0 (nothing written) when the version moved since LOAD_BATCH: another worker or an
# earlier attempt applied first, and the caller must reload and re-plan. Else 1.
APPLY_PLAN_LUA = _PRELUDE + """
local meta = KEYS[1]
local arg = cmsgpack.unpack(ARGV[1])
-- Fencing: the plan is a delta against the state read at arg.version. If anyone applied
-- since, adding it again would count twice: refuse before writing anything.
local version = tonumber(redis.call('HGET', meta, VERSION) or '0')
if version ~= arg.version then return 0 end
redis.call('HSET', meta, VERSION, version + 1, TOKEN, arg.token)
if arg.watermark ~= '' then redis.call('HSET', meta, WATERMARK, arg.watermark) end
if (arg.read_watermark or '') ~= '' then
  redis.call('HSET', meta, READ_WATERMARK, arg.read_watermark)
end
-- the offsets go in the same call as the state they produced: after a crash both roll
-- back or forward together
local offsets = arg.offsets
for i = 1, #offsets, 2 do
  redis.call('HSET', meta, OFFSET .. offsets[i], offsets[i + 1])
end
for _, group in ipairs(arg.users) do
  redis.call('HSET', KEYS[group[1]], unpack(group, 2))  -- one HSET per bucket
end
for _, group in ipairs(arg.counters) do
  local targets = group[1]
  for i = 2, #group, 2 do
    local field, delta = group[i], group[i + 1]
    for _, index in ipairs(targets) do
      local key = KEYS[index]
      -- delete on zero: a counter back at 0 is removed, so a hash holds only non-zero
      -- fields and Redis deletes the hash when its last field goes
      if redis.call('HINCRBY', key, field, delta) == 0 then redis.call('HDEL', key, field) end
    end
  end
end
local expiring = {}
for _, group in ipairs(arg.dedup) do
  local bucket, pairs = KEYS[group[1]], {}
  for i = 2, #group do
    pairs[#pairs + 1] = group[i]
    pairs[#pairs + 1] = ''
  end
  redis.call('HSET', bucket, unpack(pairs))
  -- once per bucket and call: the bucket lives dedup_ttl from its latest write, and one
  -- EXPIRE per bucket is as good as one per id
  if not expiring[bucket] then
    redis.call('EXPIRE', bucket, arg.dedup_ttl)
    expiring[bucket] = true
  end
end
-- a generation's bucket count goes with its first write: no id of it is ever without one
local sizes = arg.dedup_sizes or {}
if #sizes == 4 then
  local key = KEYS[sizes[1]]
  if sizes[2] ~= '' then redis.call('HSET', key, BUCKETS, sizes[2]) end
  if sizes[3] ~= '' then redis.call('HSET', key, UNCOUNTED, sizes[3]) end
  if sizes[4] ~= '0' then redis.call('HINCRBY', key, IDS, sizes[4]) end
  redis.call('EXPIRE', key, arg.dedup_ttl)  -- outlives its buckets: the same writes
end
-- due entries: one ZADD or ZREM per bucket, then each bucket touched has its index entry
-- set to its earliest moment, or dropped once it is empty (Redis deletes an empty key)
local touched, order = {}, {}
for _, step in ipairs({{'ZADD', arg.due_add}, {'ZREM', arg.due_remove}}) do
  for _, group in ipairs(step[2]) do
    redis.call(step[1], KEYS[group[1]], unpack(group, 4))
    if not touched[group[1]] then
      touched[group[1]] = group
      order[#order + 1] = group[1]
    end
  end
end
for _, bucket in ipairs(order) do
  local group = touched[bucket]
  local first = redis.call('ZRANGE', KEYS[bucket], 0, 0, 'WITHSCORES')
  if first[2] then
    redis.call('ZADD', KEYS[group[2]], first[2], group[3])
  else
    redis.call('ZREM', KEYS[group[2]], group[3])
  end
end
return 1
"""


# KEYS: due buckets of one partition and kind (``state/schema.py`` ``due_bucket``).
# ARGV[1]: {most = the latest moment wanted, in ms, limit = entries per bucket at most
#           (0: all)}
# Returns [member, score, member, score, ...]: each bucket's entries up to ``most``, oldest
# first, bucket after bucket: one call for a due page's hundreds of buckets, where a
# pipeline of one read each cost the worker more than the entries (``DueSets._due_page``).
DUE_RANGE_LUA = """
local arg = cmsgpack.unpack(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local part
  if arg.limit > 0 then
    part = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', arg.most, 'WITHSCORES', 'LIMIT', 0,
                      arg.limit)
  else
    part = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', arg.most, 'WITHSCORES')
  end
  for j = 1, #part do out[#out + 1] = part[j] end
end
return out
"""


# KEYS: due buckets of one partition and kind (``state/schema.py`` ``due_bucket``), those
#       whose earliest entry has come (the kind's index says which).
# ARGV[1]: {now = "now" in ms, per_app = true to count per app (a member is
#           ``app NUL user_id``), false for one total}
# Returns [app, count, app, count, ...] (one total: a single pair whose app is ''). Read
# only: the entries due by now, counted where they lie, with no member or record sent
# back (``DueSets.due_counts``).
DUE_COUNTS_LUA = """
local arg = cmsgpack.unpack(ARGV[1])
local now = arg.now
if not arg.per_app then
  local total = 0
  for i = 1, #KEYS do total = total + redis.call('ZCOUNT', KEYS[i], '-inf', now) end
  return {'', total}
end
local counts, out = {}, {}
for i = 1, #KEYS do
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', now)) do
    local app = string.sub(member, 1, string.find(member, '\\0', 1, true) - 1)
    counts[app] = (counts[app] or 0) + 1
  end
end
for app, count in pairs(counts) do
  out[#out + 1] = app
  out[#out + 1] = count
end
return out
"""


def pack(value: object) -> bytes:
    """The scripts' argument map. Raw (str) type for bytes too: Redis's cmsgpack predates
    MessagePack's bin type and rejects it."""
    return msgpack.packb(value, use_bin_type=False)


class KeyIndex:
    """The KEYS list of one script call: each key once, referred to by its 1-based index."""

    __slots__ = ("_index",)

    def __init__(self, first: str) -> None:
        self._index: dict[str, int] = {first: 1}

    def of(self, name: str) -> int:
        index = self._index
        return index.setdefault(name, len(index) + 1)

    def names(self) -> list[str]:
        return list(self._index)


#: Members per grouped command at most: Lua's unpack() returns ~8,000 values at most.
GROUP_MAX = 1000


def grouped(members: Iterable[tuple[Hashable, Sequence[object]]],
            head_of: Callable[[Any], Sequence[object]],
            most: int = GROUP_MAX) -> tuple[list[list[object]], list[int]]:
    """(bucket, member) pairs -> one list per bucket, ``[*head_of(bucket), *member, ...]``,
    buckets in first-seen order, a new list after ``most`` members; and the input
    positions of the members in that order. The scripts make one Redis call per list (an
    HMGET or HSET per bucket) instead of one per member, and reply in the lists' order.
    ``head_of`` (the bucket's key indexes) runs once per bucket, not per member."""
    flat: list[Sequence[object]] = []
    positions: dict[Hashable, list[int]] = {}
    for position, (bucket, member) in enumerate(members):
        flat.append(member)
        found = positions.get(bucket)
        if found is None:
            positions[bucket] = [position]
        else:
            found.append(position)
    groups: list[list[object]] = []
    order: list[int] = []
    for bucket, where in positions.items():
        head = head_of(bucket)
        for start in range(0, len(where), most):
            chunk = where[start:start + most]
            group = [*head]
            for position in chunk:
                group.extend(flat[position])
            groups.append(group)
            order += chunk
    return groups, order
