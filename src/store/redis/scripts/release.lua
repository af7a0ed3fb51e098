-- Deletes the owner if it matches, removes the session from that owner's index, and
-- announces the change. KEYS[1] owner key; ARGV: check flag, expected owner, channel,
-- session id, index key prefix ('' on a Cluster: the caller updates the index after the
-- script). Returns {1, previous} or {0, actual}.
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '1' and cur ~= ARGV[2] then return {0, cur} end
if cur then
  redis.call('DEL', KEYS[1])
  if ARGV[5] ~= '' then redis.call('SREM', ARGV[5] .. cur, ARGV[4]) end
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
return {1, cur}
