-- Assigns unowned sessions to a backfill job's owner. KEYS[1]: the job's assigned set;
-- ARGV: owner, owner key prefix, index key prefix, TTL in ms (0: none), owner-change
-- channel, then session ids (the assigned ones are announced on the channel).
-- Returns how many were assigned. Touches keys it computes: standalone Redis only.
local assigned = 0
local changed = {}
local index = ARGV[3] .. ARGV[1]
for i = 6, #ARGV do
  local id = ARGV[i]
  local ok
  if ARGV[4] ~= '0' then
    ok = redis.call('SET', ARGV[2] .. id, ARGV[1], 'NX', 'PX', ARGV[4])
  else
    ok = redis.call('SET', ARGV[2] .. id, ARGV[1], 'NX')
  end
  if ok then
    redis.call('SADD', index, id)
    redis.call('SADD', KEYS[1], id)
    assigned = assigned + 1
    changed[#changed + 1] = id
  end
end
if #changed > 0 then redis.call('PUBLISH', ARGV[5], table.concat(changed, '\n')) end
return assigned
