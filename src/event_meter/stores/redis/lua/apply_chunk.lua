-- Step 2 of an apply, one chunk: merge rollup fields and interval state by the laws and
-- index the buckets written, at most once per (batch id, chunk) and only while the batch
-- is journaled.
-- KEYS[1] journal hash; KEYS[2] this chunk's guard key; KEYS[3..] the rollup keys, the
-- state keys, then the index keys (bucket index ZSETs, bucket member SETs).
-- ARGV[1] batch id; ARGV[2] ttl ms; ARGV[3] the chunk as JSON:
--   [[fields of each rollup key], [started ms of each state key],
--    [[KEYS position of a ZSET, bucket id, ...], ...],
--    [[KEYS position of a SET, index key, ...], ...]]
-- where fields is an object field -> integer delta (decimal text when it does not fit
-- 53 bits; the caller sends nothing else). A field named "*_min" keeps the minimum,
-- "*_max" the maximum, any other adds.
-- Returns 1 when applied, 0 when this chunk was applied before, -1 when the batch is
-- no longer journaled (another replayer finished it).
-- A stored value that is not a plain decimal integer (or a key of the wrong type) is
-- treated as absent. Sums are exact: Lua adds when the result fits 53 bits (numbers
-- are doubles), HINCRBY (64-bit) adds otherwise; min, max and state compare numerically.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then return 0 end

local call, try, unpack, type, tonumber = redis.call, redis.pcall, unpack, type, tonumber
local match, sub, find = string.match, string.sub, string.find
local EXACT = 9007199254740992 -- 2^53
local SLICE = 2000 -- arguments per HSET/HMGET, well below Lua's unpack limit
local ttl = ARGV[2]
local chunk = cjson.decode(ARGV[3])
local rollups, states = chunk[1], chunk[2]

local function decimal(value)
  return type(value) == 'string' and match(value, '^%-?%d+$') ~= nil
end

-- Run a command on a key that may hold another type: then drop the key and run it again.
local function own(command, key, ...)
  local reply = try(command, key, ...)
  if type(reply) == 'table' and reply['err'] then
    if find(reply['err'], 'WRONGTYPE', 1, true) then call('DEL', key) end
    reply = call(command, key, ...) -- raises any other error
  end
  return reply
end

local laws = {} -- field -> 0 sum, 1 min, 2 max (names repeat across keys: derive each once)
local function merge(key, names, values, n)
  local stored = own('HMGET', key, unpack(names, 1, n))
  local out, m = {}, 0
  for j = 1, n do
    local field, value, current = names[j], values[j], stored[j]
    local new = nil
    if not decimal(current) then
      new = value
    else
      local law = laws[field]
      if law == nil then
        local tail = sub(field, -4)
        law = (tail == '_min' and 1) or (tail == '_max' and 2) or 0
        laws[field] = law
      end
      if law == 0 then
        local sum = type(value) == 'number' and #current < 16 and tonumber(current) + value
        if sum and sum > -EXACT and sum < EXACT then
          new = sum
        elseif type(try('HINCRBY', key, field, value)) ~= 'number' then
          new = value -- HINCRBY refused it (a 64-bit overflow): treated as absent
        end
      elseif law == 1 then
        if tonumber(value) < tonumber(current) then new = value end
      elseif tonumber(value) > tonumber(current) then
        new = value
      end
    end
    if new ~= nil then
      out[m + 1], out[m + 2] = field, new
      m = m + 2
    end
  end
  if m > 0 then call('HSET', key, unpack(out, 1, m)) end
end

for i = 1, #rollups do
  local key = KEYS[2 + i]
  if call('EXISTS', key) == 0 then -- a new hash (the common case): the fields as sent
    local args, n = {}, 0
    for field, value in pairs(rollups[i]) do
      args[n + 1], args[n + 2] = field, value
      n = n + 2
      if n == SLICE then
        call('HSET', key, unpack(args, 1, n))
        n = 0
      end
    end
    if n > 0 then call('HSET', key, unpack(args, 1, n)) end
  else
    local names, values, n = {}, {}, 0
    for field, value in pairs(rollups[i]) do
      n = n + 1
      names[n], values[n] = field, value
      if n == SLICE then
        merge(key, names, values, n)
        n = 0
      end
    end
    if n > 0 then merge(key, names, values, n) end
  end
  call('PEXPIRE', key, ttl)
end

local first = 2 + #rollups
for i = 1, #states do
  local key, value = KEYS[first + i], states[i]
  local current = own('GET', key)
  if not decimal(current) or tonumber(value) > tonumber(current) then
    call('SET', key, value, 'PX', ttl)
  else
    call('PEXPIRE', key, ttl)
  end
end

-- Add the members of one index group (ZADD with score 0, or SADD), a slice at a time.
local function index(command, group, scored)
  local key, args, n = KEYS[group[1]], {}, 0
  for j = 2, #group do
    if scored then
      args[n + 1] = 0
      n = n + 1
    end
    args[n + 1] = group[j]
    n = n + 1
    if n >= SLICE then
      own(command, key, unpack(args, 1, n))
      n = 0
    end
  end
  if n > 0 then own(command, key, unpack(args, 1, n)) end
  call('PEXPIRE', key, ttl)
end
for _, group in ipairs(chunk[3]) do index('ZADD', group, true) end
for _, group in ipairs(chunk[4]) do index('SADD', group, false) end
return 1
