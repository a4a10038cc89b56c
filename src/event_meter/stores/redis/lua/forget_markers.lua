-- Delete processed markers (idempotent).
-- KEYS[1] any key of the report (it routes the call to the report's Redis Cluster slot).
-- ARGV[1] the marker key prefix ({ns}:processed:{tag}:); ARGV[2] the escaped entry ids
-- joined by "\n" (esc never emits a newline). Returns how many markers existed.
local call, find, sub, unpack = redis.call, string.find, string.sub, unpack
local prefix, ids = ARGV[1], ARGV[2]
local keys, n, deleted, start = {}, 0, 0, 1
while true do
  local stop = find(ids, '\n', start, true)
  n = n + 1
  keys[n] = prefix .. sub(ids, start, (stop or 0) - 1)
  if n == 1000 or not stop then
    deleted = deleted + call('DEL', unpack(keys, 1, n))
    n = 0
  end
  if not stop then break end
  start = stop + 1
end
return deleted
