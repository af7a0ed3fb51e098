-- Sets the owner if the current one matches, moves the session from the previous owner's
-- index to the new one's, and announces the change. KEYS: owner key, new owner's index (absent
-- on a Cluster: the caller moves the index entry after the script);
-- ARGV: new owner, check flag, expected owner, TTL in ms (0: none), channel, session id,
-- index key prefix. Returns {1, previous} or {0, actual}.
local cur = redis.call('GET', KEYS[1])
if ARGV[2] == '1' and cur ~= ARGV[3] then return {0, cur} end
if ARGV[4] ~= '0' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
if KEYS[2] then
  if cur and cur ~= ARGV[1] then redis.call('SREM', ARGV[7] .. cur, ARGV[6]) end
  redis.call('SADD', KEYS[2], ARGV[6])
end
redis.call('PUBLISH', ARGV[5], ARGV[6])
return {1, cur}
