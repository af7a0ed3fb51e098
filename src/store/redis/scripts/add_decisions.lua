-- Adds a stats writer's batch of decision counts, unless a batch of this number (or a later
-- one) was added already. KEYS: the writer's key, then the buckets (one slot: the {stats}
-- tag); ARGV: the batch number, the writer key's lifetime in seconds, then per bucket: its
-- expiry (Unix seconds), n, and n field/count pairs. Returns 1 when added, 0 when skipped.
--
-- The number is recorded first: a script that fails halfway (a bucket key of another type)
-- keeps what it wrote, and its retry is then skipped, so an error can only lose counts, never
-- count them twice.
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local seq = tonumber(ARGV[1])
if seq <= last then
  return 0
end
redis.call('SET', KEYS[1], seq, 'EX', ARGV[2])
local i = 3
for k = 2, #KEYS do
  local expires_at = ARGV[i]
  local n = tonumber(ARGV[i + 1])
  i = i + 2
  for _ = 1, n do
    redis.call('HINCRBY', KEYS[k], ARGV[i], ARGV[i + 1])
    i = i + 2
  end
  redis.call('EXPIREAT', KEYS[k], expires_at)
end
return 1
