-- Delete a lease only while it is still ours, so a late release never frees
-- a lock that expired and was taken by another holder.
-- KEYS[1] lock key; ARGV[1] our token. Returns 1 when deleted, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
