-- Appends a writer's audit events, skipping those already appended. KEYS: stream, writers
-- hash; ARGV: maxlen, writer, then per event: seq, field count n, n field/value strings.
-- Returns how many were appended.
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
local written = 0
local i = 3
while i <= #ARGV do
  local seq = tonumber(ARGV[i])
  local n = tonumber(ARGV[i + 1])
  if seq > last then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, i + 2, i + 1 + n))
    last = seq
    written = written + 1
  end
  i = i + 2 + n
end
redis.call('HSET', KEYS[2], ARGV[2], last)
return written
