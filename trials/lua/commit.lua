-- Write a decision (optional), controller states and report acknowledgements atomically.
-- KEYS: schema, version, stages, latest, horizon, decisions, then n_streams report streams
--       to acknowledge in, then one ctl key per state
-- ARGV: schema_version, expected_version, group, decision_json ('' for none), from_step,
--       n_streams, then per stream: n_ids, ids..., then one state json per ctl key
-- Returns the decision version written (or the current version when no decision).
-- Errors (nothing written):
--   TT_SCHEMA <found>
--   TT_CONFLICT <current_version>      another writer committed first
--   TT_STARTED <horizon>               from_step is at or before a step already promised
local found = redis.call('GET', KEYS[1])
if found and found ~= ARGV[1] then
  return redis.error_reply('TT_SCHEMA ' .. found)
end
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if current ~= tonumber(ARGV[2]) then
  return redis.error_reply('TT_CONFLICT ' .. current)
end
local has_decision = ARGV[4] ~= ''
if has_decision then
  local horizon = tonumber(redis.call('GET', KEYS[5]) or '-1')
  if tonumber(ARGV[5]) <= horizon then
    return redis.error_reply('TT_STARTED ' .. horizon)
  end
end
if not found then
  redis.call('SET', KEYS[1], ARGV[1])
end
local version = current
if has_decision then
  version = redis.call('INCR', KEYS[2])
  redis.call('HSET', KEYS[4], ARGV[5], ARGV[4])
  redis.call('ZADD', KEYS[3], tonumber(ARGV[5]), ARGV[5])
  redis.call('XADD', KEYS[6], '*', 'd', ARGV[4])
end
local n_streams = tonumber(ARGV[6])
local a = 7
for s = 1, n_streams do
  local n_ids = tonumber(ARGV[a])
  if n_ids > 0 then
    local ids = {}
    for i = 1, n_ids do ids[i] = ARGV[a + i] end
    redis.call('XACK', KEYS[6 + s], ARGV[3], unpack(ids))
  end
  a = a + 1 + n_ids
end
local first_ctl = 7 + n_streams
for k = first_ctl, #KEYS do
  redis.call('SET', KEYS[k], ARGV[a + (k - first_ctl)])
end
return version
