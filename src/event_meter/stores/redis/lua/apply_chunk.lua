-- Step 2 of an apply, one chunk: merge rollup fields and interval state by the laws,
-- at most once per (batch id, chunk) and only while the batch is journaled.
-- KEYS[1] journal hash; KEYS[2] this chunk's guard key; KEYS[3..] rollup keys, then state keys.
-- ARGV[1] batch id; ARGV[2] ttl ms; ARGV[3] number of rollup keys; then per rollup key
-- a field count n and n field/value pairs; then one started ms per state key.
-- Returns 1 when applied, 0 when this chunk was applied before, -1 when the batch is
-- no longer journaled (another replayer finished it).
-- A stored value that is not a plain decimal integer (or a key of the wrong type) is
-- treated as absent. Sums use HINCRBY (exact 64-bit integers); min, max and state
-- compare numerically and store the argument text unchanged.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then return 0 end

local ttl = ARGV[2]
local function decimal(value)
  return type(value) == 'string' and string.match(value, '^%-?%d+$') ~= nil
end
local function own_type(key, wanted)
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= wanted and kind ~= 'none' then redis.call('DEL', key) end
end

local rollups = tonumber(ARGV[3])
local a = 4
for i = 1, rollups do
  local key = KEYS[2 + i]
  own_type(key, 'hash')
  local n = tonumber(ARGV[a])
  a = a + 1
  for _ = 1, n do
    local field, value = ARGV[a], ARGV[a + 1]
    a = a + 2
    local law = string.sub(field, -4)
    if law == '_min' or law == '_max' then
      local current = redis.call('HGET', key, field)
      if not decimal(current)
        or (law == '_min' and tonumber(value) < tonumber(current))
        or (law == '_max' and tonumber(value) > tonumber(current)) then
        redis.call('HSET', key, field, value)
      end
    else
      local added = redis.pcall('HINCRBY', key, field, value)
      if type(added) == 'table' and added['err'] then
        redis.call('HSET', key, field, value)
      end
    end
  end
  redis.call('PEXPIRE', key, ttl)
end

for i = 3 + rollups, #KEYS do
  local key, value = KEYS[i], ARGV[a]
  a = a + 1
  own_type(key, 'string')
  local current = redis.call('GET', key)
  if not decimal(current) or tonumber(value) > tonumber(current) then
    redis.call('SET', key, value, 'PX', ttl)
  else
    redis.call('PEXPIRE', key, ttl)
  end
end
return 1
