-- Step 1 of an apply: record the whole delta in the report's journal hash.
-- KEYS[1] journal hash; KEYS[2..] processed markers of the batch's entry ids.
-- ARGV[1] batch id; ARGV[2] the delta as JSON.
-- Returns 0 when every marker exists (the batch was applied already: nothing to do),
-- 2 when the journal already holds this batch (a retry: replay the stored delta),
-- 1 when the journal entry was written.
if #KEYS > 1 then
  local all = true
  for i = 2, #KEYS do
    if redis.call('EXISTS', KEYS[i]) == 0 then
      all = false
      break
    end
  end
  if all then return 0 end
end
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 2 end
return 1
