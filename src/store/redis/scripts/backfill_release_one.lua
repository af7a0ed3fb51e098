-- The Cluster form of backfill_release, for one session: deletes the owner key and the job
-- marker beside it when the owner is still ARGV[1] and the marker names job ARGV[2] (a session
-- the job did not assign, or that was reassigned and came back, is kept).
-- KEYS: owner key, job marker; ARGV: owner, job id. Returns 1 when released, 0 when kept.
if redis.call('TYPE', KEYS[1])['ok'] ~= 'string' or redis.call('TYPE', KEYS[2])['ok'] ~= 'string' then
  return 0
end
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
return 0
