-- Delete interval state keys older than a time, checked and deleted atomically so a
-- state moved forward by a concurrent apply is kept.
-- KEYS: state keys; ARGV[1] before ms. A value that is not a plain decimal integer
-- counts as older. Returns the number of keys deleted.
local before = tonumber(ARGV[1])
local deleted = 0
for i = 1, #KEYS do
  local ok, value = pcall(redis.call, 'GET', KEYS[i])
  if not ok or (value and (not string.match(value, '^%-?%d+$') or tonumber(value) < before)) then
    deleted = deleted + redis.call('DEL', KEYS[i])
  end
end
return deleted
