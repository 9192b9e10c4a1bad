"""Lua scripts run by :class:`~otel_adaptive.store.redis.RedisStore`.

The run scripts receive the agent's keys in the same order (``KEYS[1]`` meta,
``KEYS[2]`` runs, ``KEYS[3]`` run index); the others say which keys they take.
An agent's keys all share its hash tag, so each script runs atomically on one
cluster slot.

Problems found in stored data are returned, never raised, as triples
``{key_index, reason, detail}``; the store logs and counts them. In
``replace`` mode a script deletes the bad key before writing; in ``ignore``
mode it leaves the key alone and skips the write that needed it.
"""

from __future__ import annotations

# Shared helpers, prepended to every per-agent script.
_PRELUDE = r"""
local function key_type(i)
  return redis.call('TYPE', KEYS[i])['ok']
end

-- The agent's schema state: 'ok', or a problem reason plus a detail.
local function schema_problem(version)
  local t = key_type(1)
  if t == 'none' then return nil end
  if t ~= 'hash' then return {1, 'wrong_type', t} end
  local found = redis.call('HGET', KEYS[1], 'schema_version')
  if not found then return {1, 'corrupt', 'meta hash has no schema_version'} end
  if found ~= version then return {1, 'schema_version', found} end
  return nil
end

-- True when the agent's keys may be written; repairs them in replace mode.
local function guard_agent(version, mode, problems)
  local problem = schema_problem(version)
  if problem == nil then return true end
  problems[#problems + 1] = problem
  if mode ~= 'replace' then return false end
  for i = 1, #KEYS do redis.call('DEL', KEYS[i]) end
  return true
end

-- True when KEYS[i] is absent or of the expected type; repairs it in replace mode.
local function guard_key(i, expected, mode, problems)
  local t = key_type(i)
  if t == 'none' or t == expected then return true end
  problems[#problems + 1] = {i, 'wrong_type', t}
  if mode ~= 'replace' then return false end
  redis.call('DEL', KEYS[i])
  return true
end

-- Remove run ids from the run hash and its index, in bounded chunks
-- (Lua's unpack has a small argument limit).
local function drop_runs(ids)
  for first = 1, #ids, 500 do
    local chunk = {}
    for j = first, math.min(first + 499, #ids) do chunk[#chunk + 1] = ids[j] end
    redis.call('HDEL', KEYS[2], unpack(chunk))
    redis.call('ZREM', KEYS[3], unpack(chunk))
  end
  return #ids
end
"""

#: ARGV: schema version, mode, max runs, age cutoff ('' for none), then
#: (run id, end time score, encoded run) triples.
#: Returns {written (0/1), problems, runs removed by retention, fresh (1 when the
#: agent had no meta hash: new here, or lost in a flush or an empty restart),
#: runs added (the others replaced a run of the same id)}.
SAVE_RUNS = (
    _PRELUDE
    + r"""
local version, mode = ARGV[1], ARGV[2]
local max_runs = tonumber(ARGV[3])
local cutoff = ARGV[4]
local problems = {}
local existed = redis.call('EXISTS', KEYS[1])
if not guard_agent(version, mode, problems) then return {0, problems, 0, 0, 0} end
local runs_ok = guard_key(2, 'hash', mode, problems)
local index_ok = guard_key(3, 'zset', mode, problems)
if not (runs_ok and index_ok) then return {0, problems, 0, 0, 0} end
if #problems > 0 and mode == 'replace' then
  -- The run hash and its index only make sense together.
  redis.call('DEL', KEYS[2], KEYS[3])
end
-- One HSET and one ZADD per 500 runs, not per run: commands do not grow with the batch.
local added = 0
for first = 5, #ARGV, 1500 do
  local fields, scores = {}, {}
  for i = first, math.min(first + 1497, #ARGV - 2), 3 do
    fields[#fields + 1] = ARGV[i]
    fields[#fields + 1] = ARGV[i + 2]
    scores[#scores + 1] = ARGV[i + 1]
    scores[#scores + 1] = ARGV[i]
  end
  added = added + redis.call('HSET', KEYS[2], unpack(fields))
  redis.call('ZADD', KEYS[3], unpack(scores))
end
local removed = 0
if cutoff ~= '' then
  removed = removed + drop_runs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. cutoff))
end
local count = redis.call('ZCARD', KEYS[3])
if count > max_runs then
  removed = removed + drop_runs(redis.call('ZRANGE', KEYS[3], 0, count - max_runs - 1))
end
redis.call('HSET', KEYS[1], 'schema_version', version)
return {1, problems, removed, 1 - existed, added}
"""
)

#: ARGV: schema version, limit (0 for all).
#: Returns {readable (0/1), problems, id1, record1, id2, record2, ...} oldest first.
LIST_RUNS = (
    _PRELUDE
    + r"""
local version, limit = ARGV[1], tonumber(ARGV[2])
local problems = {}
local problem = schema_problem(version)
if problem ~= nil then return {0, {problem}} end
for i = 2, 3 do
  local expected = 'hash'
  if i == 3 then expected = 'zset' end
  local t = key_type(i)
  if t ~= 'none' and t ~= expected then problems[#problems + 1] = {i, 'wrong_type', t} end
end
if #problems > 0 then return {0, problems} end
local ids
if limit > 0 then
  ids = redis.call('ZRANGE', KEYS[3], -limit, -1)
else
  ids = redis.call('ZRANGE', KEYS[3], 0, -1)
end
local reply = {1, problems}
for first = 1, #ids, 500 do
  local chunk = {}
  for j = first, math.min(first + 499, #ids) do chunk[#chunk + 1] = ids[j] end
  local records = redis.call('HMGET', KEYS[2], unpack(chunk))
  for j = 1, #chunk do
    reply[#reply + 1] = chunk[j]
    reply[#reply + 1] = records[j]
  end
end
return reply
"""
)

#: KEYS: meta, one learned-state hash (the base or a writer's shard).
#: ARGV: schema version, cursor, count, largest value, byte budget, then
#: optionally field names (read those with HMGET instead of scanning).
#: Reads in bounded steps: at most ``count`` fields are scanned (HSCAN, never a
#: whole hash at once); a value larger than the largest allowed is reported and
#: left out; values past the byte budget are not sent but named, for a later call.
#: Returns {readable (0/1), problems, next cursor ('0' when done), {field, value,
#: ...}, {deferred field, ...}}.
LOAD_CHUNK = r"""
local version = ARGV[1]
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'none' then
  if t ~= 'hash' then return {0, {{1, 'wrong_type', t}}, '0', {}, {}} end
  local found = redis.call('HGET', KEYS[1], 'schema_version')
  if not found then return {0, {{1, 'corrupt', 'meta hash has no schema_version'}}, '0', {}, {}} end
  if found ~= version then return {0, {{1, 'schema_version', found}}, '0', {}, {}} end
end
t = redis.call('TYPE', KEYS[2])['ok']
if t == 'none' then return {1, {}, '0', {}, {}} end
if t ~= 'hash' then return {0, {{2, 'wrong_type', t}}, '0', {}, {}} end
local largest, budget = tonumber(ARGV[4]), tonumber(ARGV[5])
local cursor, items = '0', {}
if #ARGV > 5 then
  local values = redis.call('HMGET', KEYS[2], unpack(ARGV, 6, #ARGV))
  for i = 6, #ARGV do
    if values[i - 5] then
      items[#items + 1] = ARGV[i]
      items[#items + 1] = values[i - 5]
    end
  end
else
  local scanned = redis.call('HSCAN', KEYS[2], ARGV[2], 'COUNT', ARGV[3])
  cursor, items = scanned[1], scanned[2]
end
local problems, pairs_, deferred, used = {}, {}, {}, 0
for i = 1, #items, 2 do
  local size = #items[i + 1]
  if size > largest then
    problems[#problems + 1] = {2, 'oversized', 'field ' .. items[i] .. ': ' .. size .. ' bytes'}
  elseif used > 0 and used + size > budget then
    deferred[#deferred + 1] = items[i]
  else
    used = used + size
    pairs_[#pairs_ + 1] = items[i]
    pairs_[#pairs_ + 1] = items[i + 1]
  end
end
return {1, problems, cursor, pairs_, deferred}
"""

#: KEYS: meta, the agent's writer hash. ARGV: schema version, most writers listed.
#: Returns {readable (0/1), problems, {writer, last write time, ...}, version}:
#: the writers whose shards hold part of the agent's learned state, and the
#: agent's learned-state version (bumped by every merge).
LIST_WRITERS = r"""
local version = ARGV[1]
local t = redis.call('TYPE', KEYS[1])['ok']
local learned_version = 0
if t ~= 'none' then
  if t ~= 'hash' then return {0, {{1, 'wrong_type', t}}, {}, 0} end
  local found = redis.call('HGET', KEYS[1], 'schema_version')
  if not found then return {0, {{1, 'corrupt', 'meta hash has no schema_version'}}, {}, 0} end
  if found ~= version then return {0, {{1, 'schema_version', found}}, {}, 0} end
  learned_version = tonumber(redis.call('HGET', KEYS[1], 'learned_version') or '0')
end
t = redis.call('TYPE', KEYS[2])['ok']
if t == 'none' then return {1, {}, {}, learned_version} end
if t ~= 'hash' then return {0, {{2, 'wrong_type', t}}, {}, learned_version} end
local scanned = redis.call('HSCAN', KEYS[2], '0', 'COUNT', ARGV[2])
return {1, {}, scanned[2], learned_version}
"""

#: KEYS: meta, batch ids, writer hash, then this writer's shard of each
#: learned-state hash (one per configured learner), then the base hashes in the
#: same order.
#: ARGV: batch id, schema version, mode, now, batch ids kept, writer id, stamp
#: (the time this writer last wrote, as its writers entry should still say, or
#: '' to check every field), then for each shard a field count n followed by n
#: triples (field, SHA-1 of the value this writer last wrote there or '' if
#: none, new value).
#: Only this writer writes its shard, so the compare-and-set fails only when the
#: writer's own view is stale (a lost reply, a compacted shard): the conflict
#: reply carries the current values. Batch ids are shared by every writer of the
#: agent, so a batch merged by any process is skipped.
#: Returns {status, problems, fresh, conflicts}: status 1 applied, 0 batch
#: already applied, 2 conflicts as (key index, field, current value) triples,
#: 3 bad data blocks the write in ignore mode; fresh is 1 when the agent had no
#: meta hash (new here, or lost in a flush or an empty restart).
MERGE_SHARD = (
    _PRELUDE
    + r"""
local batch, version, mode = ARGV[1], ARGV[2], ARGV[3]
local now, keep, writer, stamp = ARGV[4], tonumber(ARGV[5]), ARGV[6], ARGV[7]
local problems = {}
local fresh = 1 - redis.call('EXISTS', KEYS[1])
if not guard_agent(version, mode, problems) then return {3, problems, fresh, {}} end
if not guard_key(2, 'zset', mode, problems) then return {3, problems, fresh, {}} end
if not guard_key(3, 'hash', mode, problems) then return {3, problems, fresh, {}} end
if redis.call('ZSCORE', KEYS[2], batch) then return {0, problems, fresh, {}} end
local specs = {}
local pos = 8
-- KEYS[4 .. 3 + n] are the shards; the base hashes after them are only named so
-- that replace mode can start an agent of another schema afresh.
for k = 4, 3 + (#KEYS - 3) / 2 do
  local n = tonumber(ARGV[pos])
  pos = pos + 1
  if n > 0 then
    if not guard_key(k, 'hash', mode, problems) then return {3, problems, fresh, {}} end
    specs[#specs + 1] = {k, pos, n}
  end
  pos = pos + 3 * n
end
-- When the writer's entry still holds the stamp of its last write, nothing but
-- that write touched the shard: no field needs checking (no HMGET, no SHA-1).
local trusted = stamp ~= '' and redis.call('HGET', KEYS[3], writer) == stamp
-- Fields are read and written 500 at a time (HMGET, HSET), not one command each.
local conflicts = {}
for _, spec in ipairs(specs) do
  if trusted then break end
  local key = KEYS[spec[1]]
  local last = spec[2] + 3 * (spec[3] - 1)
  for first = spec[2], last, 1500 do
    local names = {}
    for p = first, math.min(first + 1497, last), 3 do names[#names + 1] = ARGV[p] end
    local values = redis.call('HMGET', key, unpack(names))
    for j = 1, #names do
      local p = first + 3 * (j - 1)
      local current = values[j]
      local digest = ''
      if current then digest = redis.sha1hex(current) end
      if digest ~= ARGV[p + 1] then
        conflicts[#conflicts + 1] = spec[1]
        conflicts[#conflicts + 1] = ARGV[p]
        conflicts[#conflicts + 1] = current
      end
    end
  end
end
if #conflicts > 0 then return {2, problems, fresh, conflicts} end
for _, spec in ipairs(specs) do
  local key = KEYS[spec[1]]
  local last = spec[2] + 3 * (spec[3] - 1)
  for first = spec[2], last, 1500 do
    local pairs_ = {}
    for p = first, math.min(first + 1497, last), 3 do
      pairs_[#pairs_ + 1] = ARGV[p]
      pairs_[#pairs_ + 1] = ARGV[p + 2]
    end
    redis.call('HSET', key, unpack(pairs_))
  end
end
redis.call('ZADD', KEYS[2], now, batch)
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(keep + 1))
redis.call('HSET', KEYS[3], writer, now)
redis.call('HSET', KEYS[1], 'schema_version', version)
redis.call('HINCRBY', KEYS[1], 'learned_version', 1)
return {1, problems, fresh, {}}
"""
)

#: KEYS: meta, writer hash, the base learned-state hash, a departed writer's shard.
#: ARGV: departed writer id, its last write time as listed, then (field, SHA-1 of
#: the base value or '', SHA-1 of the shard value, merged value) quadruples.
#: Folds fields of a writer that stopped writing into the base hash: each field
#: moves atomically (written to the base, deleted from the shard) only if neither
#: value changed since it was read and the writer has not written again. When
#: the shard is empty the writer is forgotten.
#: Returns {1} folded, {0} something changed (nothing written; try later).
FOLD_SHARD = r"""
local writer, seen = ARGV[1], ARGV[2]
if redis.call('HGET', KEYS[2], writer) ~= seen then return {0} end
for i = 3, #ARGV, 4 do
  local base = redis.call('HGET', KEYS[3], ARGV[i])
  local shard = redis.call('HGET', KEYS[4], ARGV[i])
  local base_digest = ''
  if base then base_digest = redis.sha1hex(base) end
  if base_digest ~= ARGV[i + 1] or not shard or redis.sha1hex(shard) ~= ARGV[i + 2] then
    return {0}
  end
end
for i = 3, #ARGV, 4 do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 3])
  redis.call('HDEL', KEYS[4], ARGV[i])
end
-- The writer's entry changes with every fold step, so the writer (should it come
-- back) knows its shard changed, and a step on a stale listing fails.
if redis.call('EXISTS', KEYS[4]) == 0 then
  redis.call('HDEL', KEYS[2], writer)
else
  redis.call('HSET', KEYS[2], writer, seen .. '+')
end
redis.call('HINCRBY', KEYS[1], 'learned_version', 1)
return {1}
"""

#: KEYS: the agent registry set. ARGV: mode, then agent ids.
#: Returns {written (0/1), problems, existed (0 when the registry was absent),
#: added (agent ids the set did not hold yet)}.
REGISTER_AGENTS = r"""
local mode = ARGV[1]
local problems = {}
local t = redis.call('TYPE', KEYS[1])['ok']
local existed = 1
if t == 'none' then existed = 0 end
if t ~= 'none' and t ~= 'set' then
  problems[1] = {1, 'wrong_type', t}
  if mode ~= 'replace' then return {0, problems, 1, 0} end
  redis.call('DEL', KEYS[1])
end
local added = 0
for first = 2, #ARGV, 500 do
  added = added + redis.call('SADD', KEYS[1], unpack(ARGV, first, math.min(first + 499, #ARGV)))
end
return {1, problems, existed, added}
"""
