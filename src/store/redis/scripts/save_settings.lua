-- Saves settings if the stored version is the expected one (and below the new one), appends
-- the history entry and announces the settings. KEYS: settings hash, history zset; ARGV: new
-- version, settings JSON, entry JSON, channel, expected version. Returns -1 when saved, else
-- the stored version.
local cur = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if cur ~= tonumber(ARGV[5]) or tonumber(ARGV[1]) <= cur then return cur end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'settings', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[2])
return -1
