"""The Lua scripts of the blocklist store: every change, and every read that must see one moment, is one script.

Each script runs atomically in Redis, so replicas never race on a read-modify-write and nothing is half-written. The
keys they touch are those of :mod:`wa_blocklist.proxy.store.schema` (all of one connector, so one Redis Cluster slot);
the comment above each script names its KEYS and ARGV in order. A script that reads a block takes ``now`` from the
caller's clock and treats an entry whose expiry is at or before it as absent. The operations that run them are
:class:`wa_blocklist.proxy.store.blocks.BlocklistStore`'s.
"""

from __future__ import annotations

# Shared by the scripts below: is a block entry present and not expired; remove an expired one with its audit record.
_EXPIRY_FUNCTIONS = """
local function live(blocks, expiry, key, now)
  if redis.call('HEXISTS', blocks, key) == 0 then return false end
  local exp = redis.call('ZSCORE', expiry, key)
  return (not exp) or tonumber(exp) > now
end
local function expire(blocks, order, expiry, audit, key, maxlen, at)
  local raw = redis.call('HGET', blocks, key)
  redis.call('HDEL', blocks, key)
  redis.call('ZREM', order, key)
  redis.call('ZREM', expiry, key)
  if raw then
    local e = cjson.decode(raw)
    redis.call('XADD', audit, 'MAXLEN', '~', maxlen, '*', 'action', 'expire', 'number', e['number'], 'type', e['kind'],
      'by', 'expiry', 'source', 'expiry', 'reason', e['reason'], 'at', at)
  end
  return raw
end
"""

# KEYS: blocks order links seen audit expiry.
# ARGV: key entry_json blocked_at_ms cutoff_ms force audit_maxlen invalidation_channel pnid,
#       then the audit record: number type by source reason at, then now_ms expires_at_ms ('' when permanent)
BLOCK = (
    _EXPIRY_FUNCTIONS
    + """
local existing = redis.call('HGET', KEYS[1], ARGV[1])
if existing then
  if live(KEYS[1], KEYS[6], ARGV[1], tonumber(ARGV[15])) then return {'exists', existing} end
  expire(KEYS[1], KEYS[2], KEYS[6], KEYS[5], ARGV[1], ARGV[6], ARGV[14])
  redis.call('PUBLISH', ARGV[7], ARGV[8])
end
if ARGV[5] ~= '1' then
  local cutoff = tonumber(ARGV[4])
  local seen = redis.call('ZSCORE', KEYS[4], ARGV[1])
  local recent = seen and tonumber(seen) >= cutoff
  if not recent then
    local other = redis.call('HGET', KEYS[3], ARGV[1])
    if other then
      local seen2 = redis.call('ZSCORE', KEYS[4], other)
      recent = seen2 and tonumber(seen2) >= cutoff
    end
  end
  if not recent then return {'stale', ''} end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
if ARGV[16] ~= '' then redis.call('ZADD', KEYS[6], ARGV[16], ARGV[1]) end
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[6], '*', 'action', 'block', 'number', ARGV[9], 'type', ARGV[10],
  'by', ARGV[11], 'source', ARGV[12], 'reason', ARGV[13], 'at', ARGV[14])
redis.call('PUBLISH', ARGV[7], ARGV[8])
return {'created', ARGV[2]}
"""
)

# KEYS: blocks order audit expiry. ARGV: key audit_maxlen invalidation_channel pnid by source reason at now_ms
# An expired entry is not there to unblock: it is removed as the sweep would (audited as an expiry).
UNBLOCK = (
    _EXPIRY_FUNCTIONS
    + """
local existing = redis.call('HGET', KEYS[1], ARGV[1])
if not existing then return false end
if not live(KEYS[1], KEYS[4], ARGV[1], tonumber(ARGV[9])) then
  expire(KEYS[1], KEYS[2], KEYS[4], KEYS[3], ARGV[1], ARGV[2], ARGV[8])
  redis.call('PUBLISH', ARGV[3], ARGV[4])
  return false
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
local entry = cjson.decode(existing)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'action', 'unblock', 'number', entry['number'],
  'type', entry['kind'], 'by', ARGV[5], 'source', ARGV[6], 'reason', ARGV[7], 'at', ARGV[8])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return existing
"""
)

# KEYS: blocks audit expiry order. ARGV: key old_fingerprint new_entry_json expires_at_ms ('' when permanent)
#       audit_maxlen invalidation_channel pnid, then the audit record: number type by source reason at, then now_ms
# Compare-and-set: the entry is replaced only if it is still the one the caller read (a concurrent change wins).
UPDATE = (
    _EXPIRY_FUNCTIONS
    + """
local existing = redis.call('HGET', KEYS[1], ARGV[1])
if not existing then return 'missing' end
if not live(KEYS[1], KEYS[3], ARGV[1], tonumber(ARGV[14])) then
  expire(KEYS[1], KEYS[4], KEYS[3], KEYS[2], ARGV[1], ARGV[5], ARGV[13])
  redis.call('PUBLISH', ARGV[6], ARGV[7])
  return 'missing'
end
local e = cjson.decode(existing)
local exp = e['expires_at_ms']
if exp == nil or exp == cjson.null then exp = '' else exp = string.format('%d', exp) end
if string.format('%d', e['blocked_at_ms']) .. '|' .. exp .. '|' .. e['reason'] ~= ARGV[2] then return 'changed' end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
if ARGV[4] == '' then redis.call('ZREM', KEYS[3], ARGV[1]) else redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1]) end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'action', 'update', 'number', ARGV[8], 'type', ARGV[9],
  'by', ARGV[10], 'source', ARGV[11], 'reason', ARGV[12], 'at', ARGV[13])
redis.call('PUBLISH', ARGV[6], ARGV[7])
return 'updated'
"""
)

# KEYS: blocks links expiry. ARGV: now_ms, then identity keys.
# Returns {first blocked key (directly or through a link), its expiry in ms or ''}, or nil.
BLOCKED_KEY = """
local now = tonumber(ARGV[1])
local function hit(id)
  if redis.call('HEXISTS', KEYS[1], id) == 0 then return false end
  local exp = redis.call('ZSCORE', KEYS[3], id)
  if exp and tonumber(exp) <= now then return false end
  return exp or ''
end
for i = 2, #ARGV do
  local id = ARGV[i]
  local exp = hit(id)
  if exp then return {id, exp} end
  local other = redis.call('HGET', KEYS[2], id)
  if other then
    exp = hit(other)
    if exp then return {other, exp} end
  end
end
return false
"""

# KEYS: blocks order expiry audit. ARGV: now_ms audit_maxlen invalidation_channel pnid limit at.
# Removes up to ``limit`` expired entries (each with an ``expire`` audit record); returns their JSON.
SWEEP = (
    _EXPIRY_FUNCTIONS
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[5]))
local out = {}
for _, key in ipairs(due) do
  local raw = expire(KEYS[1], KEYS[2], KEYS[3], KEYS[4], key, ARGV[2], ARGV[6])
  if raw then table.insert(out, raw) end
end
if #due > 0 then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return out
"""
)

# KEYS: blocks links seen expiry, then one key per ownership record (``msg:<id>`` / ``join:<id>``).
# ARGV: one JSON object (one argument is far cheaper for the client to send than twenty): ``argv``, the list of
# strings now_ms cutoff_ms invalidation_channel pnid ttl_ms user_count, then per user (wa_key, bsuid, active) with ''
# for absent and active '1' when the item counts as the user writing, then per ownership record the index of its user;
# ``owned``, ``prefs``, ``flood``, ``maxlen``, ``at`` (opt-out keywords and flood protection, below), ``confirm`` and
# ``claim``.
# Replay guard (proxy/inbound/replay.py), after the flood keys: KEYS of earlier deliveries' confirmations get their
# window (extra.confirm: seconds each), then with extra.claim (ms) the delivered-body key is set NX for that long
# before anything is recorded: when it is already set the body is a replay, nothing is recorded and nil is returned.
# Records the last inbound time of active users (blocked or not), learns links, records who owns each inbound message
# and join request (the owner as "wa_key\tbsuid", kept ttl_ms), returns 1/0 blocked per user.
# A link is written in both directions at once and the stale reverse entries of both sides are removed, so a later
# payload always repairs an earlier wrong pairing. A new or changed link can change who is blocked, so it is
# announced on the invalidation channel.
INBOUND = (
    _EXPIRY_FUNCTIONS
    + """
local extra = cjson.decode(ARGV[1])
local ARG = extra['argv']
local owned = tonumber(extra['owned'])
local guard = 7 + owned + #extra['flood']  -- KEYS index before the replay guard's keys
local confirm = extra['confirm'] or {}
for n, seconds in ipairs(confirm) do redis.call('EXPIRE', KEYS[guard + n], seconds) end
if extra['claim'] and not redis.call('SET', KEYS[guard + #confirm + 1], '1', 'NX', 'PX', extra['claim']) then
  return false
end
local now = tonumber(ARG[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARG[2])
local out = {}
local changed = false
local users = tonumber(ARG[6])
local function unlink(id, partner)
  -- drop id's link unless it already points at partner; drop the reverse entry only if it points back at id
  local old = redis.call('HGET', KEYS[2], id)
  if old and old ~= partner then
    if redis.call('HGET', KEYS[2], old) == id then redis.call('HDEL', KEYS[2], old) end
    redis.call('HDEL', KEYS[2], id)
    changed = true
  end
end
for i = 1, users do
  local wa = ARG[4 + 3 * i]
  local bs = ARG[5 + 3 * i]
  local active = ARG[6 + 3 * i] == '1'
  if wa ~= '' and bs ~= '' and (redis.call('HGET', KEYS[2], wa) ~= bs or redis.call('HGET', KEYS[2], bs) ~= wa) then
    unlink(wa, bs)
    unlink(bs, wa)
    redis.call('HSET', KEYS[2], wa, bs, bs, wa)
    changed = true
  end
  local blocked = 0
  for _, id in ipairs({wa, bs}) do
    if id ~= '' then
      if active then redis.call('ZADD', KEYS[3], 'GT', ARG[1], id) end
      if blocked == 0 then
        if live(KEYS[1], KEYS[4], id, now) then
          blocked = 1
        else
          local other = redis.call('HGET', KEYS[2], id)
          if other and live(KEYS[1], KEYS[4], other, now) then blocked = 1 end
        end
      end
    end
  end
  out[i] = blocked
end
local first = 7 + 3 * users
for k = 5, 4 + owned do
  local u = tonumber(ARG[first + k - 5]) + 1  -- indexes are 0-based
  redis.call('SET', KEYS[k], ARG[4 + 3 * u] .. '\t' .. ARG[5 + 3 * u], 'PX', ARG[5])
end
-- Opt-out keywords (issue 19): KEYS[4 + owned + 1] optouts, + 2 audit, + 3 order, then one flood key per entry.
local optouts, audit, order = KEYS[5 + owned], KEYS[6 + owned], KEYS[7 + owned]
for _, p in ipairs(extra['prefs']) do
  if p['mode'] == 'optout' then
    if redis.call('HSETNX', optouts, p['key'], p['entry']) == 1 then
      redis.call('XADD', audit, 'MAXLEN', '~', extra['maxlen'], '*', 'action', 'optout', 'number', p['number'],
        'type', p['kind'], 'by', 'user', 'source', 'keyword', 'reason', p['reason'], 'at', extra['at'])
    end
  else
    local removed = 0
    for _, id in ipairs(p['drop']) do removed = removed + redis.call('HDEL', optouts, id) end
    if removed > 0 then
      redis.call('XADD', audit, 'MAXLEN', '~', extra['maxlen'], '*', 'action', 'optin', 'number', p['number'],
        'type', p['kind'], 'by', 'user', 'source', 'keyword', 'reason', p['reason'], 'at', extra['at'])
    end
  end
end
-- Flood protection: a sliding window of message IDs per user; crossing the limit makes a temporary block.
for n, f in ipairs(extra['flood']) do
  local u = tonumber(f['user']) + 1
  local fk = KEYS[7 + owned + n]
  if out[u] == 0 then
    redis.call('ZREMRANGEBYSCORE', fk, '-inf', now - tonumber(f['window']))
    for _, mid in ipairs(f['ids']) do redis.call('ZADD', fk, 'NX', now, mid) end
    redis.call('PEXPIRE', fk, f['window'])
    if redis.call('ZCARD', fk) > tonumber(f['max']) then
      redis.call('HSET', KEYS[1], f['key'], f['entry'])
      redis.call('ZADD', order, now, f['key'])
      redis.call('ZADD', KEYS[4], f['expires'], f['key'])
      redis.call('XADD', audit, 'MAXLEN', '~', extra['maxlen'], '*', 'action', 'block', 'number', f['number'],
        'type', f['kind'], 'by', 'flood', 'source', 'auto', 'reason', f['reason'], 'at', extra['at'])
      redis.call('DEL', fk)
      out[u] = 2
      changed = true
    end
  end
end
if changed then redis.call('PUBLISH', ARG[3], ARG[4]) end
return out
"""
)

# KEYS: optouts links. ARGV: identity keys. The first opted-out key (directly or through a link), or nil.
OPTED_OUT_KEY = """
for i = 1, #ARGV do
  local id = ARGV[i]
  if redis.call('HEXISTS', KEYS[1], id) == 1 then return id end
  local other = redis.call('HGET', KEYS[2], id)
  if other and redis.call('HEXISTS', KEYS[1], other) == 1 then return other end
end
return false
"""

# KEYS: optouts audit. ARGV: mode ('optout'/'optin') key entry_json maxlen, then the audit record: number type by
# source reason at. Returns 1 when something changed (a new opt-out, or one removed).
SET_OPTOUT = """
local changed
if ARGV[1] == 'optout' then
  changed = redis.call('HSETNX', KEYS[1], ARGV[2], ARGV[3])
else
  changed = redis.call('HDEL', KEYS[1], ARGV[2])
end
if changed == 1 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'action', ARGV[1], 'number', ARGV[5], 'type', ARGV[6],
    'by', ARGV[7], 'source', ARGV[8], 'reason', ARGV[9], 'at', ARGV[10])
end
return changed
"""

# KEYS: order blocks. ARGV: max_score after_member count. Members strictly after the cursor, newest first,
# with their entries; ties on the score are ordered by member, descending, as ZREVRANGEBYSCORE orders them.
PAGE = """
local max = ARGV[1]
local after = ARGV[2]
local count = tonumber(ARGV[3])
local ties = 0
if after ~= '' then ties = redis.call('ZCOUNT', KEYS[1], max, max) end
local rows = redis.call('ZREVRANGEBYSCORE', KEYS[1], max, '-inf', 'WITHSCORES', 'LIMIT', 0, count + ties)
local out = {}
local maxn = tonumber(max)
for i = 1, #rows, 2 do
  local member, score = rows[i], rows[i + 1]
  if after == '' or tonumber(score) < maxn or member < after then
    table.insert(out, member)
    table.insert(out, score)
    table.insert(out, redis.call('HGET', KEYS[2], member) or '')
    if #out >= count * 3 then break end
  end
end
return out
"""
