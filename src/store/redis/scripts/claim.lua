-- Makes ARGV[1] the owner if the session has none (`SET NX`: of concurrent claims exactly one
-- wins), adds the session to the new owner's index (also when it already was theirs: a
-- repeated claim mends an index entry lost before writes were atomic), and announces the
-- session (whatever the outcome: an instance caching "no owner" must not keep it once the
-- claim is acknowledged).
-- KEYS: owner key, new owner's index (absent on a Cluster, where the caller updates the index
-- after the script: another slot); ARGV: user, TTL in ms (0: none), channel, session id.
-- Returns {1, false} when claimed, else {0, current owner}.
local ok
if ARGV[2] ~= '0' then
  ok = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
else
  ok = redis.call('SET', KEYS[1], ARGV[1], 'NX')
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
if ok then
  if KEYS[2] then redis.call('SADD', KEYS[2], ARGV[4]) end
  return {1, false}
end
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] and KEYS[2] then redis.call('SADD', KEYS[2], ARGV[4]) end
return {0, cur}
