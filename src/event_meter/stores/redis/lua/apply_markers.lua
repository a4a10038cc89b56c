-- Step 3 of an apply: mark entry ids processed, only while the batch is journaled.
-- KEYS[1] journal hash. ARGV[1] batch id; ARGV[2] ttl ms; ARGV[3] the ISO time to store;
-- ARGV[4] the marker key prefix ({ns}:processed:{tag}:); ARGV[5] the escaped entry ids
-- joined by "\n" (esc never emits a newline). The marker keys share the report's hash
-- tag with KEYS[1], so they live in its Redis Cluster slot.
-- Returns 1, or -1 when the batch is no longer journaled.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
local call, find, sub = redis.call, string.find, string.sub
local ttl, iso, prefix, ids = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local start = 1
while true do
  local stop = find(ids, '\n', start, true)
  call('SET', prefix .. sub(ids, start, (stop or 0) - 1), iso, 'NX', 'PX', ttl)
  if not stop then break end
  start = stop + 1
end
return 1
