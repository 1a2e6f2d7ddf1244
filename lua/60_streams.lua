-- Part 6: attempt output streams (spec/streams.md), mirroring appliance/core/streams.py and
-- the SQL stores (appliance/backend/sql/streams.py); the appliance side is
-- flowfabric_valkey.streams.
--
-- Keys (the execution's slot {fp:N}; <i> an attempt index):
--   ff:x:<eid>:sts        SET     the attempt indexes that have a stream (close wake-ups, purge)
--   ff:x:<eid>:st:<i>     STREAM  the attempt's retained frames, ids "<ms>-<seq>" minted here
--                                 (streams.plan_append); fields frame_type, payload, encoding,
--                                 source, mode and, when set, correlation_id, ttl_ms,
--                                 summary_version
--   ff:x:<eid>:st:<i>:m   HASH    its bookkeeping (streams.StreamMeta): last_ms, last_seq,
--                                 frame_count and total_bytes (lifetime), retained,
--                                 has_durable, ema_rate_hz, last_append_ms
--   ff:x:<eid>:st:<i>:s   HASH    its summary (streams.Summary): document, version,
--                                 last_updated_ms, first_applied_ms
-- A batch with summary_patch frames is merged by the appliance (numbers stay exact; cjson
-- would round them) against the version it read: the append refuses with {moved} when
-- another patch won meanwhile, and the appliance merges again.
-- Everything is inside one function (see lua/50_admission.lua: the main chunk's locals).

local function define_streams()

local function stream_key(eid, index) return core_key(eid) .. ':st:' .. index end
local function stream_set(eid) return core_key(eid) .. ':sts' end

-- -- hooks of the record's writers (lua/00_library.lua) ---------------------------------------

-- While not nil: the woken list of a call whose closes stay out of it (see quietly).
local quiet_for = nil

-- A stream of the execution closed (streams.closes). Every appliance, the caller's too, hears
-- "|s:<eid>" when the execution has a stream (others pay nothing). The wake key also goes to
-- the caller beside the lanes, once per step, where the SQL stores' answer names it: not
-- from a claim, nor from a flow's resolution (their writes' wake-ups are only notified).
STREAM.closes = function(eid)
  if redis.call('EXISTS', stream_set(eid)) == 1 then
    redis.call('PUBLISH', WORK_CHANNEL, '|s:' .. eid)
  end
  if quiet_for ~= nil and quiet_for == woken_lanes then return end
  local key = WAKE_KEYS.stream .. eid
  for _, k in ipairs(woken_lanes) do
    if k == key then return end
  end
  woken_lanes[#woken_lanes + 1] = key
end

local function restore(was, ...)
  quiet_for = was
  return ...
end

-- fn, with the closes it makes kept out of the call's woken list (a call that fails midway
-- leaves quiet_for naming a list no later call has).
STREAM.quietly = function(fn)
  return function(...)
    local was = quiet_for
    quiet_for = woken_lanes
    return restore(was, fn(...))
  end
end

FLOW.finish = STREAM.quietly(FLOW.finish)

-- A purged execution takes the streams of all its attempts along.
STREAM.forget = function(eid)
  local set = stream_set(eid)
  for _, index in ipairs(redis.call('SMEMBERS', set)) do
    local S = stream_key(eid, index)
    redis.call('DEL', S, S .. ':m', S .. ':s')
  end
  redis.call('DEL', set)
end

-- -- the rules (appliance/core/streams.py) ------------------------------------------------------

-- streams.retention_maxlen: policy.stream_policy.retention_maxlen when an integer in range
-- (Python's True is the integer 1).
local function retention_maxlen(ex)
  local v = field(field(policy_of(ex), 'stream_policy'), 'retention_maxlen')
  if v == true then v = 1 end
  if is_int(v) and v >= 1 and v <= STREAMS.retention_maxlen then return v end
  return STREAMS.retention_maxlen
end

-- streams.check_writer: check_lease's refusals, without marking an expired lease (a refused
-- append writes nothing); the lease core would mark expired answers as it would after the
-- mark (a reached reclaim cap ends the execution and clears the lease).
local function check_writer(ex, fence, index, now)
  local e = check_lease(ex, fence, {now = -math.huge})
  if e then return e end
  if ex.lease_expires_at ~= nil and ex.lease_expires_at <= now then
    local at = ex.lease_expires_at
    if reclaim_cap_reached(ex) then at = NULL end
    return fail_with('lease_expired', {execution_id = ex.execution_id, lease_expires_at = at})
  end
  if ex.current_attempt_index ~= index then
    return fail_with('stale_lease', {execution_id = ex.execution_id, held = fence.lease_epoch,
                                     lease_epoch = ex.current_lease_epoch})
  end
  return nil
end

-- streams.ema_update and streams.best_effort_keep (the same float operations, in order).
local function ema_update(ema, last_append_ms, now, ttl_ms)
  if last_append_ms == 0 or ema == 0 then
    return STREAMS.best_effort_floor / (2 * math.max(ttl_ms, 1) / 1000)
  end
  local inst = 1000 / math.max(now - last_append_ms, 1)
  return STREAMS.ema_alpha * inst + (1 - STREAMS.ema_alpha) * ema
end

local function best_effort_keep(ema, ttl_ms)
  local k = math.ceil(ema * ttl_ms / 1000 * 2)
  return math.min(math.max(k, STREAMS.best_effort_floor), STREAMS.best_effort_ceiling)
end

local function frame_id(ms, seq) return string.format('%d-%d', ms, seq) end

-- A stored frame a read leaves out (streams.Frame.expired): best-effort, past its ttl.
local function expired(id, fields, now)
  local mode, ttl
  for j = 1, #fields, 2 do
    if fields[j] == 'mode' then
      mode = fields[j + 1]
    elseif fields[j] == 'ttl_ms' then
      ttl = tonumber(fields[j + 1])
    end
  end
  if mode ~= 'best_effort' or ttl == nil or ttl <= 0 then return false end
  return tonumber(string.match(id, '^(%d+)')) + ttl <= now
end

-- -- the functions ----------------------------------------------------------------------------
-- KEYS[1] is the execution's record key (ff:x:<eid>).

-- Append a batch to the stream of attempt a.attempt_index, the lease checked in the same step
-- (streams.check_writer, streams.plan_append). ARGV[1]: {now, fence, attempt_index, mode,
-- ttl_ms, max_bytes, frames: [[frame_type, encoding, correlation_id, source,
-- summary_version]...], summary: {base, version} when the batch patches it}; ARGV[1 + i] the
-- payload of frames[i]; with summary, the last ARGV the merged document. Answers
-- {ok = {first_id, last_id, count, frame_count, summary_version}}, a refusal {err, d},
-- {missing}, {too_large = the stream's lifetime bytes} or {moved = the summary's version}.
STREAM.append = function(keys, argv)
  local a = args_of(argv)
  local eid = eid_of(keys[1])
  local ex = load(eid)
  if not ex then return {missing = true} end
  local e = check_writer(ex, a.fence, a.attempt_index, a.now)
  if e then return e end
  local index = to_text(a.attempt_index)
  local S = stream_key(eid, index)
  local m = redis.call('HMGET', S .. ':m', 'last_ms', 'last_seq', 'frame_count', 'total_bytes',
                       'has_durable', 'ema_rate_hz', 'last_append_ms')
  local last_ms, last_seq = tonumber(m[1]) or 0, tonumber(m[2]) or 0
  local count, total = tonumber(m[3]) or 0, tonumber(m[4]) or 0
  local n, size = #a.frames, 0
  for i = 1, n do size = size + #argv[i + 1] end
  if total + size > a.max_bytes then return {too_large = total} end
  local first_applied = a.now
  if a.summary then
    local held = redis.call('HMGET', S .. ':s', 'version', 'first_applied_ms')
    local version = tonumber(held[1]) or 0
    if version ~= a.summary.base then return {moved = version} end
    first_applied = tonumber(held[2]) or a.now
  end
  local ms = math.max(a.now, last_ms)
  local seq = 0
  if ms == last_ms and count > 0 then seq = last_seq + 1 end
  local ttl = 0
  if a.mode == 'best_effort' then ttl = a.ttl_ms or 0 end
  for i, f in ipairs(a.frames) do
    local fields = {'frame_type', f[1], 'payload', argv[i + 1], 'encoding', f[2],
                    'source', f[4], 'mode', a.mode}
    if f[3] ~= '' then
      fields[#fields + 1] = 'correlation_id'
      fields[#fields + 1] = f[3]
    end
    if ttl ~= 0 then
      fields[#fields + 1] = 'ttl_ms'
      fields[#fields + 1] = to_text(ttl)
    end
    if f[5] ~= 0 then
      fields[#fields + 1] = 'summary_version'
      fields[#fields + 1] = to_text(f[5])
    end
    redis.call('XADD', S, frame_id(ms, seq + i - 1), unpack(fields))
  end
  local has_durable = m[5] == '1'
  local ema = tonumber(m[6]) or 0
  local keep
  if a.mode == 'durable' then
    has_durable, keep = true, retention_maxlen(ex)
  elseif a.mode == 'summary' then
    has_durable, keep = true, math.min(retention_maxlen(ex), STREAMS.summary_maxlen)
  else
    ema = ema_update(ema, tonumber(m[7]) or 0, a.now, a.ttl_ms or 0)
    keep = best_effort_keep(ema, a.ttl_ms or 0)
  end
  redis.call('XTRIM', S, 'MAXLEN', keep)
  local last = frame_id(ms, seq + n - 1)
  redis.call('HSET', S .. ':m', 'last_ms', to_text(ms), 'last_seq', to_text(seq + n - 1),
             'frame_count', to_text(count + n), 'total_bytes', to_text(total + size),
             'retained', redis.call('XLEN', S), 'has_durable', has_durable and '1' or '0',
             'ema_rate_hz', string.format('%.17g', ema), 'last_append_ms', to_text(a.now))
  local version = 0
  if a.summary then
    version = a.summary.version
    redis.call('HSET', S .. ':s', 'document', argv[n + 2], 'version', to_text(version),
               'last_updated_ms', to_text(a.now), 'first_applied_ms', to_text(first_applied))
  end
  redis.call('SADD', stream_set(eid), index)
  freed['s:' .. eid] = true  -- tails of other appliances look again
  return {ok = {first_id = frame_id(ms, seq), last_id = last, count = n,
                frame_count = count + n, summary_version = version}}
end

-- What the appliance plans a patch batch on: {record, bookkeeping, summary} (flat hashes),
-- or nil for an unknown execution. ARGV[1]: {index}.
STREAM.state = function(keys, argv)
  local a = cjson.decode(argv[1])
  local flat = redis.call('HGETALL', keys[1])
  if #flat == 0 then return nil end
  local S = stream_key(eid_of(keys[1]), to_text(a.index))
  return {flat, redis.call('HGETALL', S .. ':m'), redis.call('HGETALL', S .. ':s')}
end

-- Up to a.limit frames of attempt a.index with ids in a.lo..a.hi (inclusive, ids as text),
-- oldest first, with what the close marker is derived from (streams.closed), read together.
-- Expired best-effort frames are read past, so they never hide newer ones. ARGV[1]: {index,
-- lo, hi, limit, now}. Answers nil for an unknown execution, else {record (flat), attempt
-- row JSON or nil, id, fields, id, fields...}.
STREAM.read = function(keys, argv)
  local a = cjson.decode(argv[1])
  local flat = redis.call('HGETALL', keys[1])
  if #flat == 0 then return nil end
  local index = to_text(a.index)
  local S = stream_key(eid_of(keys[1]), index)
  local out = {flat, redis.call('HGET', keys[1] .. ':att', index) or false}
  local n, start = 0, a.lo
  while n < a.limit do
    local want = a.limit - n
    local batch = redis.call('XRANGE', S, start, a.hi, 'COUNT', want)
    for _, entry in ipairs(batch) do
      if not expired(entry[1], entry[2], a.now) then
        out[#out + 1] = entry[1]
        out[#out + 1] = entry[2]
        n = n + 1
      end
    end
    if #batch < want then break end
    start = '(' .. batch[#batch][1]
  end
  return out
end

-- The attempt's summary: {1, {document, version, last_updated_ms, first_applied_ms}} (nil
-- fields: never patched), or nil for an unknown execution. ARGV[1]: {index}.
STREAM.summary = function(keys, argv)
  local a = cjson.decode(argv[1])
  if redis.call('EXISTS', keys[1]) == 0 then return nil end
  local S = stream_key(eid_of(keys[1]), to_text(a.index))
  return {1, redis.call('HMGET', S .. ':s', 'document', 'version', 'last_updated_ms',
                        'first_applied_ms')}
end

end
define_streams()
