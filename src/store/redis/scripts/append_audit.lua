-- Appends a writer's audit events, skipping those already appended. KEYS: stream, writers
-- hash (same slot), optionally the writers hash of before it moved into the stream's slot
-- (read when the writer is not in the first); ARGV: maxlen, writer, then per event: seq,
-- field count n, n field/value strings. Returns how many were appended.
local last = redis.call('HGET', KEYS[2], ARGV[2])
if not last and KEYS[3] then
  last = redis.call('HGET', KEYS[3], ARGV[2])
end
last = tonumber(last or '0')
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
