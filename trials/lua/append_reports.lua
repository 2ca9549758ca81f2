-- Append a batch of reports, all or nothing.
-- KEYS: schema, progress, seen, reports, workers
-- ARGV: schema_version, n, then n times: rank, attempt, step, json
-- Returns {written, duplicates}. Errors (nothing written):
--   TT_SCHEMA <found>            the job was written under another schema version
--   TT_REGRESSION <rank> <attempt> <step> <last_attempt> <last_step>
local found = redis.call('GET', KEYS[1])
if found and found ~= ARGV[1] then
  return redis.error_reply('TT_SCHEMA ' .. found)
end
local n = tonumber(ARGV[2])
local last = {}
local keep = {}
local batch = {}  -- members kept so far: a triple repeated within the batch is a duplicate
for i = 0, n - 1 do
  local rank = ARGV[3 + 4 * i]
  local attempt = tonumber(ARGV[4 + 4 * i])
  local step = tonumber(ARGV[5 + 4 * i])
  local member = rank .. ':' .. attempt .. ':' .. step
  if not batch[member] and redis.call('SISMEMBER', KEYS[3], member) == 0 then
    local prev = last[rank]
    if prev == nil then
      local stored = redis.call('HGET', KEYS[2], rank)
      if stored then
        local sep = string.find(stored, ':', 1, true)
        prev = {tonumber(string.sub(stored, 1, sep - 1)), tonumber(string.sub(stored, sep + 1))}
      end
    end
    if prev and (attempt < prev[1] or (attempt == prev[1] and step <= prev[2])) then
      return redis.error_reply('TT_REGRESSION ' .. rank .. ' ' .. attempt .. ' ' .. step ..
        ' ' .. prev[1] .. ' ' .. prev[2])
    end
    last[rank] = {attempt, step}
    batch[member] = true
    keep[#keep + 1] = i
  end
end
if not found then
  redis.call('SET', KEYS[1], ARGV[1])
end
for _, i in ipairs(keep) do
  local rank = ARGV[3 + 4 * i]
  local attempt = ARGV[4 + 4 * i]
  local step = ARGV[5 + 4 * i]
  redis.call('XADD', KEYS[4], '*', 'r', ARGV[6 + 4 * i])
  redis.call('SADD', KEYS[3], rank .. ':' .. attempt .. ':' .. step)
  redis.call('HSET', KEYS[2], rank, attempt .. ':' .. step)
  redis.call('SADD', KEYS[5], rank)
end
return {#keep, n - #keep}
