-- Releases a job's sessions that still have its owner. KEYS[1]: the job's assigned set;
-- ARGV: owner, owner key prefix, index key prefix, owner-change channel, then session ids.
-- Returns {released, {kept ids}}.
local released = 0
local kept = {}
local changed = {}
local index = ARGV[3] .. ARGV[1]
for i = 5, #ARGV do
  local id = ARGV[i]
  local key = ARGV[2] .. id
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
    redis.call('SREM', index, id)
    released = released + 1
    changed[#changed + 1] = id
  else
    kept[#kept + 1] = id
  end
  redis.call('SREM', KEYS[1], id)
end
if #changed > 0 then redis.call('PUBLISH', ARGV[4], table.concat(changed, '\n')) end
return {released, kept}
