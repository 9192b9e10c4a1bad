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

#: ARGV: schema version, mode, max runs, age cutoff ('' for none), run count n,
#: then n (end time score, run id) pairs, then n (run id, encoded run) pairs: each
#: range goes to ZADD and HSET as it is (no per-run table building in Lua).
#: Returns {written (0/1), problems, runs removed by retention, fresh (1 when the
#: agent had no meta hash: new here, or lost in a flush or an empty restart),
#: runs added (the others replaced a run of the same id)}.
SAVE_RUNS = (
    _PRELUDE
    + r"""
local version, mode = ARGV[1], ARGV[2]
local max_runs = tonumber(ARGV[3])
local cutoff = ARGV[4]
local n = tonumber(ARGV[5])
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
-- One HSET and one ZADD per 500 runs (Lua's unpack has a small argument limit).
local added = 0
local scores, records = 6, 6 + 2 * n
for offset = 0, 2 * n - 1, 1000 do
  local last = math.min(offset + 999, 2 * n - 1)
  added = added + redis.call('HSET', KEYS[2], unpack(ARGV, records + offset, records + last))
  redis.call('ZADD', KEYS[3], unpack(ARGV, scores + offset, scores + last))
end
local removed = 0
if cutoff ~= '' then
  removed = removed + drop_runs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. cutoff))
end
local excess = redis.call('ZCARD', KEYS[3]) - max_runs
if excess > 0 then
  -- The oldest go: ZPOPMIN takes them off the index, their records follow.
  local popped = redis.call('ZPOPMIN', KEYS[3], excess)
  for first = 1, #popped, 1000 do
    local ids = {}
    for j = first, math.min(first + 998, #popped), 2 do ids[#ids + 1] = popped[j] end
    redis.call('HDEL', KEYS[2], unpack(ids))
  end
  removed = removed + excess
end
if existed == 0 or #problems > 0 then
  redis.call('HSET', KEYS[1], 'schema_version', version)
end
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
#: ARGV: schema version, mode, now, batch ids kept, writer id, stamp (what this
#: writer's entry in the writer hash should still say: '' for none), batch count
#: m, m batch ids, then for each shard a field count n followed by n (field, new
#: value) pairs, a range HSET takes as it is.
#: Only this writer writes its shard, and every change to it (its writes, a fold)
#: changes its writer entry: while the entry still says ``stamp``, the writer
#: knows what the shard holds, so the write needs no check of its own (no read, no
#: digest). Otherwise nothing is written and the reply carries the entry and the
#: current values of the named fields (a writer that knows it is unsure sends a
#: stamp that never matches, with empty values). Batch ids are shared by every
#: writer of the agent, so a batch merged by any process is skipped.
#: Returns {status, problems, fresh, conflicts, extra}: status 1 applied, 0 every
#: batch already applied, 4 some were (extra: their 1-based positions; nothing is
#: written), 2 the stamp did not match (conflicts: (key index, field, current
#: value) triples; extra: the entry), 3 bad data blocks the write in ignore mode;
#: fresh is 1 when the agent had no meta hash (new here, or lost in a flush or an
#: empty restart).
MERGE_SHARD = (
    _PRELUDE
    + r"""
local version, mode = ARGV[1], ARGV[2]
local now, keep, writer, stamp = ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]
local batches = tonumber(ARGV[7])
local problems = {}
local fresh = 1 - redis.call('EXISTS', KEYS[1])
if not guard_agent(version, mode, problems) then return {3, problems, fresh, {}, ''} end
if not guard_key(2, 'zset', mode, problems) then return {3, problems, fresh, {}, ''} end
if not guard_key(3, 'hash', mode, problems) then return {3, problems, fresh, {}, ''} end
local seen = {}
for i = 1, batches do
  if redis.call('ZSCORE', KEYS[2], ARGV[7 + i]) then seen[#seen + 1] = i end
end
if #seen == batches then return {0, problems, fresh, {}, ''} end
if #seen > 0 then return {4, problems, fresh, {}, seen} end
local specs = {}
local pos = 8 + batches
-- KEYS[4 .. 3 + n] are the shards; the base hashes after them are only named so
-- that replace mode can start an agent of another schema afresh.
for k = 4, 3 + (#KEYS - 3) / 2 do
  local n = tonumber(ARGV[pos])
  pos = pos + 1
  if n > 0 then
    if not guard_key(k, 'hash', mode, problems) then return {3, problems, fresh, {}, ''} end
    specs[#specs + 1] = {k, pos, pos + 2 * n - 1}
  end
  pos = pos + 2 * n
end
local entry = redis.call('HGET', KEYS[3], writer) or ''
if entry ~= stamp then
  local conflicts = {}
  for _, spec in ipairs(specs) do
    for first = spec[2], spec[3], 1000 do
      local names = {}
      for p = first, math.min(first + 998, spec[3]), 2 do names[#names + 1] = ARGV[p] end
      local values = redis.call('HMGET', KEYS[spec[1]], unpack(names))
      for j = 1, #names do
        conflicts[#conflicts + 1] = spec[1]
        conflicts[#conflicts + 1] = names[j]
        conflicts[#conflicts + 1] = values[j]
      end
    end
  end
  return {2, problems, fresh, conflicts, entry}
end
-- Fields are written 500 at a time, straight from the argument range.
for _, spec in ipairs(specs) do
  for first = spec[2], spec[3], 1000 do
    redis.call('HSET', KEYS[spec[1]], unpack(ARGV, first, math.min(first + 999, spec[3])))
  end
end
for first = 1, batches, 500 do
  local scored = {}
  for i = first, math.min(first + 499, batches) do
    scored[#scored + 1] = now
    scored[#scored + 1] = ARGV[7 + i]
  end
  redis.call('ZADD', KEYS[2], unpack(scored))
end
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(keep + 1))
redis.call('HSET', KEYS[3], writer, now)
if fresh == 1 or #problems > 0 then
  redis.call('HSET', KEYS[1], 'schema_version', version)
end
redis.call('HINCRBY', KEYS[1], 'learned_version', 1)
return {1, problems, fresh, {}, ''}
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
