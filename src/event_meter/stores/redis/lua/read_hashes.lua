-- Read many hashes in one call (far cheaper than one pipelined HGETALL per key).
-- KEYS: hash keys. Returns, per key, its flat field/value array (empty when missing).
local out = {}
for i = 1, #KEYS do
  out[i] = redis.call('HGETALL', KEYS[i])
end
return out
