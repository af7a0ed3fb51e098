-- The Cluster form of backfill_release, for one session: deletes the owner key (and the job
-- marker beside it) when it still names ARGV[1]. KEYS: owner key, job marker; ARGV: owner.
-- Returns 1 when released, 0 when kept.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
return 0
