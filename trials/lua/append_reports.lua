-- Append a batch of reports, all or nothing.
-- KEYS: schema, progress, seen (the idempotency window), reports, workers, legacy_seen
-- ARGV: schema_version, window (reports kept per rank in seen), n,
--       then n times: rank, attempt, step, json
-- Returns {written, duplicates}. Errors (nothing written):
--   TT_SCHEMA <found>            the job was written under another schema version
--   TT_REGRESSION <rank> <attempt> <step> <last_attempt> <last_step>
-- Every triple must be after its rank's last stored (attempt, step), unless it is a
-- duplicate: a triple at or below that mark which the rank's window (its newest `window`
-- stored reports) holds. One the window does not hold is refused as a regression, whether
-- it was never stored or stored too long ago to be resent (trials/retention.py says why
-- that is safe). A rank without a window yet was last written by an earlier tautune, which
-- kept every triple in legacy_seen: that set answers for it instead.
local found = redis.call('GET', KEYS[1])
if found and found ~= ARGV[1] then
  return redis.error_reply('TT_SCHEMA ' .. found)
end
local window = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local legacy = redis.call('EXISTS', KEYS[6]) == 1

-- A window is ',attempt:step,attempt:step,...,' oldest first, the numbers as Python wrote
-- them; false when the rank has none.
local windows = {}
local function window_of(rank)
  if windows[rank] == nil then windows[rank] = redis.call('HGET', KEYS[3], rank) end
  return windows[rank]
end
local function stored_before(rank, attempt, step)
  local w = window_of(rank)
  if w then
    return string.find(w, ',' .. attempt .. ':' .. step .. ',', 1, true) ~= nil
  end
  -- Formatted as the earlier tautune did, from Lua numbers.
  return legacy and redis.call('SISMEMBER', KEYS[6],
    rank .. ':' .. tonumber(attempt) .. ':' .. tonumber(step)) == 1
end

local last = {}
local keep = {}
local batch = {}  -- triples kept so far: a triple repeated within the batch is a duplicate
for i = 0, n - 1 do
  local rank = ARGV[4 + 4 * i]
  local attempt = tonumber(ARGV[5 + 4 * i])
  local step = tonumber(ARGV[6 + 4 * i])
  local triple = rank .. ':' .. ARGV[5 + 4 * i] .. ':' .. ARGV[6 + 4 * i]
  if not batch[triple] then
    local prev = last[rank]
    if prev == nil then
      local stored = redis.call('HGET', KEYS[2], rank)
      if stored then
        local sep = string.find(stored, ':', 1, true)
        prev = {tonumber(string.sub(stored, 1, sep - 1)), tonumber(string.sub(stored, sep + 1))}
      end
    end
    local behind = prev and (attempt < prev[1] or (attempt == prev[1] and step <= prev[2]))
    if not behind then
      last[rank] = {attempt, step}
      batch[triple] = true
      keep[#keep + 1] = i
    elseif not stored_before(rank, ARGV[5 + 4 * i], ARGV[6 + 4 * i]) then
      return redis.error_reply('TT_REGRESSION ' .. rank .. ' ' .. attempt .. ' ' .. step ..
        ' ' .. prev[1] .. ' ' .. prev[2])
    end
  end
end
if not found then
  redis.call('SET', KEYS[1], ARGV[1])
end
if #keep == 0 then
  return {0, n}
end

-- The newest `window` records of w, cut at a record boundary.
local function trimmed(w)
  local _, commas = string.gsub(w, ',', '')
  local pos = 1
  for _ = 1, commas - 1 - window do pos = string.find(w, ',', pos + 1, true) end
  return string.sub(w, pos)
end

local added = {}
for _, i in ipairs(keep) do
  local rank = ARGV[4 + 4 * i]
  local attempt = ARGV[5 + 4 * i]
  local step = ARGV[6 + 4 * i]
  redis.call('XADD', KEYS[4], '*', 'r', ARGV[7 + 4 * i])
  redis.call('HSET', KEYS[2], rank, attempt .. ':' .. step)
  redis.call('SADD', KEYS[5], rank)
  added[rank] = added[rank] or {}
  table.insert(added[rank], attempt .. ':' .. step .. ',')
end
for rank, records in pairs(added) do
  local w = window_of(rank) or ','
  redis.call('HSET', KEYS[3], rank, trimmed(w .. table.concat(records)))
end
-- The earlier tautune's set is needed only by ranks without a window: gone once none is.
if legacy and redis.call('HLEN', KEYS[3]) >= redis.call('HLEN', KEYS[2]) then
  redis.call('UNLINK', KEYS[6])
end
return {#keep, n - #keep}
