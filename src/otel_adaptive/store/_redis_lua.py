"""Lua scripts run by :class:`~otel_adaptive.store.redis.RedisStore`.

Every per-agent script receives the agent's keys in the same order
(``KEYS[1]`` meta, ``KEYS[2]`` runs, ``KEYS[3]`` run index, ``KEYS[4]`` batch
ids, then one learned-state hash per configured learner). They all share the
agent's hash tag, so each script runs atomically on one cluster slot.

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
#: Returns {written (0/1), problems, runs removed by retention}.
SAVE_RUNS = (
    _PRELUDE
    + r"""
local version, mode = ARGV[1], ARGV[2]
local max_runs = tonumber(ARGV[3])
local cutoff = ARGV[4]
local problems = {}
if not guard_agent(version, mode, problems) then return {0, problems, 0} end
local runs_ok = guard_key(2, 'hash', mode, problems)
local index_ok = guard_key(3, 'zset', mode, problems)
if not (runs_ok and index_ok) then return {0, problems, 0} end
if #problems > 0 and mode == 'replace' then
  -- The run hash and its index only make sense together.
  redis.call('DEL', KEYS[2], KEYS[3])
end
-- One HSET and one ZADD per 500 runs, not per run: commands do not grow with the batch.
for first = 5, #ARGV, 1500 do
  local fields, scores = {}, {}
  for i = first, math.min(first + 1497, #ARGV - 2), 3 do
    fields[#fields + 1] = ARGV[i]
    fields[#fields + 1] = ARGV[i + 2]
    scores[#scores + 1] = ARGV[i + 1]
    scores[#scores + 1] = ARGV[i]
  end
  redis.call('HSET', KEYS[2], unpack(fields))
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
return {1, problems, removed}
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

#: KEYS: meta, one learned-state hash. ARGV: schema version.
#: Returns {readable (0/1), problems, field1, value1, ...}.
LOAD_FIELDS = r"""
local version = ARGV[1]
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'none' then
  if t ~= 'hash' then return {0, {{1, 'wrong_type', t}}} end
  local found = redis.call('HGET', KEYS[1], 'schema_version')
  if not found then return {0, {{1, 'corrupt', 'meta hash has no schema_version'}}} end
  if found ~= version then return {0, {{1, 'schema_version', found}}} end
end
t = redis.call('TYPE', KEYS[2])['ok']
if t == 'none' then return {1, {}} end
if t ~= 'hash' then return {0, {{2, 'wrong_type', t}}} end
local reply = {1, {}}
for _, item in ipairs(redis.call('HGETALL', KEYS[2])) do reply[#reply + 1] = item end
return reply
"""

#: ARGV: batch id, schema version, mode, then for each learned-state key
#: (KEYS[5..]) a field count n followed by n field names.
#: Returns {0, field values...} to proceed (nil for absent or unusable
#: fields), {1} when the batch id was already applied, or {3, problems}
#: when the agent's data blocks the write in ignore mode.
MERGE_READ = (
    _PRELUDE
    + r"""
local batch, version, mode = ARGV[1], ARGV[2], ARGV[3]
local blocked = {}
local problem = schema_problem(version)
if problem ~= nil then blocked[#blocked + 1] = problem end
-- In replace mode a schema problem means every key is about to be deleted.
local schema_ok = problem == nil
local batches_type = key_type(4)
if batches_type ~= 'none' and batches_type ~= 'zset' then
  blocked[#blocked + 1] = {4, 'wrong_type', batches_type}
end
if #blocked > 0 and mode ~= 'replace' then return {3, blocked} end
if schema_ok and batches_type == 'zset' and redis.call('ZSCORE', KEYS[4], batch) then
  return {1}
end
local reply = {0}
local pos = 4
for k = 5, #KEYS do
  local n = tonumber(ARGV[pos])
  pos = pos + 1
  if n > 0 then
    local usable = schema_ok and key_type(k) == 'hash'
    for first = pos, pos + n - 1, 500 do
      local last = math.min(first + 499, pos + n - 1)
      if usable then
        local values = redis.call('HMGET', KEYS[k], unpack(ARGV, first, last))
        for j = 1, #values do reply[#reply + 1] = values[j] end
      else
        for _ = first, last do reply[#reply + 1] = false end
      end
    end
  end
  pos = pos + n
end
return reply
"""
)

#: ARGV: batch id, schema version, mode, now, batch ids kept, then for each
#: learned-state key (KEYS[5..]) a field count n followed by n triples
#: (field, SHA-1 of the value the merge started from or '' if absent, new value).
#: Writes only if no touched field changed since it was read (compare and set),
#: so concurrent writers never overwrite each other's merges.
#: Returns {1, problems} applied, {0, problems} batch already applied,
#: {2, problems, conflicts} with (key index, field, current value) triples, or
#: {3, problems} when bad data blocks the write in ignore mode.
MERGE_WRITE = (
    _PRELUDE
    + r"""
local batch, version, mode = ARGV[1], ARGV[2], ARGV[3]
local now, keep = ARGV[4], tonumber(ARGV[5])
local problems = {}
if not guard_agent(version, mode, problems) then return {3, problems} end
if not guard_key(4, 'zset', mode, problems) then return {3, problems} end
if redis.call('ZSCORE', KEYS[4], batch) then return {0, problems} end
local specs = {}
local pos = 6
for k = 5, #KEYS do
  local n = tonumber(ARGV[pos])
  pos = pos + 1
  if n > 0 and guard_key(k, 'hash', mode, problems) then
    specs[#specs + 1] = {k, pos, n}
  end
  pos = pos + 3 * n
end
-- Fields are read and written 500 at a time (HMGET, HSET), not one command each.
local conflicts = {}
for _, spec in ipairs(specs) do
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
if #conflicts > 0 then return {2, problems, conflicts} end
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
redis.call('ZADD', KEYS[4], now, batch)
redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -(keep + 1))
redis.call('HSET', KEYS[1], 'schema_version', version)
return {1, problems}
"""
)

#: KEYS: the agent registry set. ARGV: mode, then agent ids.
#: Returns {written (0/1), problems}.
REGISTER_AGENTS = r"""
local mode = ARGV[1]
local problems = {}
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'none' and t ~= 'set' then
  problems[1] = {1, 'wrong_type', t}
  if mode ~= 'replace' then return {0, problems} end
  redis.call('DEL', KEYS[1])
end
for first = 2, #ARGV, 500 do
  redis.call('SADD', KEYS[1], unpack(ARGV, first, math.min(first + 499, #ARGV)))
end
return {1, problems}
"""
