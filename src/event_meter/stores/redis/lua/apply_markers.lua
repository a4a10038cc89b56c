-- Step 3 of an apply: mark entry ids processed, only while the batch is journaled.
-- KEYS[1] journal hash; KEYS[2..] marker keys. ARGV[1] batch id; ARGV[2] ttl ms;
-- ARGV[3] the ISO time to store. Returns 1, or -1 when the batch is no longer journaled.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], ARGV[3], 'NX', 'PX', ARGV[2])
end
return 1
