-- Write a decision (optional), controller states and report acknowledgements atomically,
-- then trim what the write made unnecessary (trials/retention.py says what and why).
-- KEYS: schema, version, stages, latest, horizon, decisions, stages_trimmed, then n_streams
--       pairs (report stream to acknowledge in, its trimmed counter), then one ctl key per
--       state
-- ARGV: schema_version, expected_version, group, decision_json ('' for none), from_step,
--       report_tail, trim_every, decision_tail, stage_tail, stage_margin,
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
local horizon = tonumber(redis.call('GET', KEYS[5]) or '-1')
local has_decision = ARGV[4] ~= ''
if has_decision and tonumber(ARGV[5]) <= horizon then
  return redis.error_reply('TT_STARTED ' .. horizon)
end
local report_tail = tonumber(ARGV[6])
local trim_every = tonumber(ARGV[7])
local decision_tail = tonumber(ARGV[8])
local stage_tail = tonumber(ARGV[9])
local stage_margin = tonumber(ARGV[10])

-- Stream ids 'ms-seq' compared exactly: each part is a decimal without leading zeros, so a
-- shorter one is smaller and equal lengths compare as text (no float rounding).
local function number_less(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local function id_less(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if am ~= bm then return number_less(am, bm) end
  return number_less(as, bs)
end

-- The oldest entry some consumer group may still need: its oldest pending entry, else the
-- last one it was delivered (everything after it is undelivered). nil when no group reads.
local function consumed_floor(stream)
  local floor = nil
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local info = {}
    for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
    local need = info['last-delivered-id']
    if tonumber(info['pending']) > 0 then
      need = redis.call('XPENDING', stream, info['name'])[2]
    end
    if floor == nil or id_less(need, floor) then floor = need end
  end
  return floor
end

-- Drop acknowledged entries beyond the newest report_tail, once there are trim_every of
-- them (amortised); never one a consumer group has pending or not yet delivered.
local function trim_reports(stream, counter)
  local excess = redis.call('XLEN', stream) - report_tail
  if excess < trim_every then return end
  local floor = consumed_floor(stream)
  if floor == nil then return end
  local n = math.min(excess, 10 * trim_every)  -- bounded work per commit
  -- The n oldest entries at or before the floor; the one after the nth bounds the trim.
  local oldest = redis.call('XRANGE', stream, '-', floor, 'COUNT', n + 1)
  local minid = floor
  if #oldest > n then minid = oldest[n + 1][1] end
  local removed = redis.call('XTRIM', stream, 'MINID', minid)
  if removed > 0 then redis.call('INCRBY', counter, removed) end
end

-- Drop the oldest stages beyond the newest stage_tail, each only once every step it covers
-- (up to its until_step, or the next stage's from_step) is stage_margin before the horizon.
local function trim_stages()
  for _ = 1, 16 do  -- bounded work per commit; one stage is the usual case
    if redis.call('ZCARD', KEYS[3]) <= stage_tail then return end
    local two = redis.call('ZRANGE', KEYS[3], 0, 1)
    local ends = tonumber(two[2])
    local until_step = cjson.decode(redis.call('HGET', KEYS[4], two[1]))['until_step']
    if type(until_step) == 'number' and until_step < ends then ends = until_step end
    if ends > horizon - stage_margin then return end
    redis.call('ZREM', KEYS[3], two[1])
    redis.call('HDEL', KEYS[4], two[1])
    if ends > tonumber(redis.call('GET', KEYS[7]) or '-1') then
      redis.call('SET', KEYS[7], ends)
    end
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
  redis.call('XADD', KEYS[6], 'MAXLEN', decision_tail, '*', 'd', ARGV[4])
  trim_stages()
end
local n_streams = tonumber(ARGV[11])
local a = 12
for s = 1, n_streams do
  local n_ids = tonumber(ARGV[a])
  if n_ids > 0 then
    local ids = {}
    for i = 1, n_ids do ids[i] = ARGV[a + i] end
    local stream = KEYS[6 + 2 * s]
    redis.call('XACK', stream, ARGV[3], unpack(ids))
    trim_reports(stream, KEYS[7 + 2 * s])
  end
  a = a + 1 + n_ids
end
local first_ctl = 8 + 2 * n_streams
for k = first_ctl, #KEYS do
  redis.call('SET', KEYS[k], ARGV[a + (k - first_ctl)])
end
return version
