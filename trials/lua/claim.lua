-- Answer "which decision covers step n" and promise that answer until valid_until.
-- KEYS: stages, latest, horizon, head_lease, schema, stages_trimmed
-- ARGV: step, lookahead, promise_if_none ('1' or '0'), schema_version
-- Returns {decision_json or '', valid_until, head_alive}. The promise moves the horizon
-- forward so that no later decision can cover a step a worker has already been answered for.
-- Errors (nothing written):
--   TT_SCHEMA <found>
--   TT_TRIMMED <step>       the stages before step were dropped (trials/retention.py)
local found = redis.call('GET', KEYS[5])
if found and found ~= ARGV[4] then
  return redis.error_reply('TT_SCHEMA ' .. found)
end
local n = tonumber(ARGV[1])
local trimmed = redis.call('GET', KEYS[6])
if trimmed and n < tonumber(trimmed) then
  return redis.error_reply('TT_TRIMMED ' .. trimmed)
end
local lookahead = tonumber(ARGV[2])
local promise_none = ARGV[3] == '1'
local head_alive = redis.call('EXISTS', KEYS[4])
local horizon = tonumber(redis.call('GET', KEYS[3]) or '-1')
local function promise(valid_until)
  if valid_until - 1 > horizon then
    redis.call('SET', KEYS[3], valid_until - 1)
  end
end
local open_until = n + lookahead
local nxt = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. n, '+inf', 'LIMIT', 0, 1)
if #nxt > 0 and tonumber(nxt[1]) < open_until then
  open_until = tonumber(nxt[1])
end
local r = redis.call('ZREVRANGEBYSCORE', KEYS[1], n, '-inf', 'LIMIT', 0, 1)
if #r > 0 then
  local json = redis.call('HGET', KEYS[2], r[1])
  local until_step = cjson.decode(json)['until_step']
  if until_step == cjson.null or until_step == nil then
    promise(open_until)
    return {json, open_until, head_alive}
  end
  if n < tonumber(until_step) then
    local valid_until = tonumber(until_step)
    if #nxt > 0 and tonumber(nxt[1]) < valid_until then
      valid_until = tonumber(nxt[1])
    end
    promise(valid_until)
    return {json, valid_until, head_alive}
  end
end
if promise_none then
  promise(open_until)
end
return {'', open_until, head_alive}
