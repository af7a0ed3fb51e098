-- The Cluster form of backfill_assign, for one session (its keys share one slot): makes
-- ARGV[1] the owner if the session has none and marks it as assigned by job ARGV[3].
-- KEYS: owner key, the job marker beside it; ARGV: owner, TTL in ms (0: none), job id.
-- Returns 1 when assigned now, 2 when this job assigned it before (a batch sent again after a
-- failure), 0 when it has another owner or was not assigned by this job.
-- Something else at the owner key (another type) is an owner: skipped, as SET NX skips it.
local existing = redis.call('TYPE', KEYS[1])['ok']
if existing ~= 'none' and existing ~= 'string' then return 0 end
local ok
if ARGV[2] ~= '0' then
  ok = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
else
  ok = redis.call('SET', KEYS[1], ARGV[1], 'NX')
end
if ok then
  if ARGV[2] ~= '0' then
    redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
  else
    redis.call('SET', KEYS[2], ARGV[3])
  end
  return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('TYPE', KEYS[2])['ok'] == 'string'
    and redis.call('GET', KEYS[2]) == ARGV[3] then
  return 2
end
return 0
