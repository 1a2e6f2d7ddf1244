#!lua name=flowfabric
-- FlowFabric's Valkey/Redis function library, part 1: the record and its indexes.
--
-- Files are concatenated in name order into one library (flowfabric_lua.library_source),
-- after a prelude generated from the Python definitions (flowfabric_valkey.generated):
-- INT_FIELDS, TERMINAL_PUBLIC, RUNNABLE_PUBLIC, RECLAIMABLE, ERROR_KINDS, DEFAULTS, LIMITS,
-- SCANNERS, OPERATIONS and WAKE_KEYS come from there (and for flows FLOW_INT_FIELDS and
-- FLOWS, for suspension SUSPENSION, for attempt streams STREAMS).
-- The state machine mirrors appliance/core/transitions.py rule for rule; Python passes the
-- time, ids and random draws in, so every function is deterministic.
--
-- Keys (every key of one call shares the hash tag {fp:N} of the execution id):
--   ff:x:<eid>            HASH   the execution record (fields of record.Execution; absent = None)
--   ff:x:<eid>:in / :out  STRING input payload / result bytes
--   ff:x:<eid>:att        HASH   attempt index -> attempt row JSON
--   ff:p:{fp:N}:all       ZSET   every execution id on the partition (lex order, for listing)
--   ff:p:{fp:N}:claim:<#lane>:<lane>:<class>  ZSET  claimable executions of one lane with one
--                         claim class (record.claim_class: the required capabilities, sorted
--                         CSV, and with limits "\n<budget ids CSV>\n<quota id>"), member
--                         "<9000-prio><created_at><eid>"
--   ff:p:{fp:N}:capsets:<#lane>:<lane>        SET   the claim classes with claimable work
--   ff:p:{fp:N}:grant     ZSET   grant_expires_at of granted executions (lua/50_admission.lua)
--   ff:p:{fp:N}:wl:<instance>  ZSET  the leases the worker instance holds here, by their
--                         latest renewal or claim
--   ff:p:{fp:N}:wleases / :wseen  HASH  worker instance -> how many / the latest of those
--                         times (what the worker registry reads)
--   ff:p:{fp:N}:lanes     ZSET   lane -> when its work here is next claimable (0: now; else the
--                         earliest delay_until); absent when the lane has none here
--   ff:p:{fp:N}:delayed[:<lane>] ZSET delay_until
--   ff:p:{fp:N}:lease     ZSET   lease_expires_at of leased executions
--   ff:p:{fp:N}:adl / :edl / :susp / :purge  ZSET  attempt deadline / execution deadline /
--                         suspension timeout / purge_at
--   ff:idem:{fp:N}:<len(ns)>:<ns>:<key>  STRING "<expires_at>:<eid>" (PX only collects garbage)
-- Flows (lua/30_flows.lua; every member of a flow is on the flow's partition {fp:N}):
--   ff:f:{fp:N}:<flow_id>            HASH  the flow record (fields of core.flows.Flow)
--   ff:f:{fp:N}:<flow_id>:members    ZSET  member execution ids (score 0, lex order)
--   ff:f:{fp:N}:<flow_id>:nodes      HASH  node key -> execution id (one-call DAG members)
--   ff:f:{fp:N}:<flow_id>:edges      HASH  edge id -> edge JSON (core.flows.Edge, and seq:
--                                          its place in the order edges were made)
--   ff:f:{fp:N}:<flow_id>:groups     HASH  downstream execution id -> edge group JSON
--   ff:f:{fp:N}:<flow_id>:down:<eid> HASH  edge id -> downstream, every edge out of <eid>
--   ff:f:{fp:N}:<flow_id>:up:<eid>   HASH  edge id -> upstream, every edge into <eid>
--   ff:f:{fp:N}:<flow_id>:open:<eid> ZSET  the edges out of <eid> still unsatisfied (score seq)
--   ff:f:{fp:N}:<flow_id>:pending:<eid> SET the edges into <eid> still unsatisfied
--   ff:p:{fp:N}:flows                ZSET  the flows of the partition (lex, for listing)
--   ff:p:{fp:N}:flows:<#ns>:<ns>     ZSET  the same, of one namespace
--   ff:p:{fp:N}:flow_open            SET   executions with unsatisfied outgoing edges (what
--                                          the dependency reconciler looks at)
--   ff:p:{fp:N}:flow_cancel          ZSET  a flow cancel's backlog: "<flow_id>|<eid>" by due_at
-- Suspension (lua/40_suspension.lua; the execution's partition {fp:N}):
--   ff:w:{fp:N}:<wid>                HASH  a waitpoint (fields of core.suspension.Waitpoint)
--   ff:w:{fp:N}:<wid>:sigs           ZSET  the signals it took (score seq)
--   ff:w:{fp:N}:<wid>:idem           HASH  idempotency key -> "<dedup_expires_at>:<signal id>"
--   ff:x:<eid>:wps / :wpopen         SET   every waitpoint of the execution / the open ones
--   ff:x:<eid>:sigs                  ZSET  the execution's signals (score seq)
--   ff:x:<eid>:sig:<sid>             HASH  a signal (fields of core.suspension.Signal; payload raw)
--   ff:p:{fp:N}:wp_pending           ZSET  pending waitpoints with an expires_at, by it
--   ff:p:{fp:N}:wpkeys               HASH  the partition's keystore replica: current, s:<kid>
--                                          (secret hex), e:<kid> (grace end)
-- Attempt streams: ff:x:<eid>:sts and ff:x:<eid>:st:<index>[:m|:s] (lua/60_streams.lua).

local LIBRARY_VERSION = '1'
-- Filled in by the loader with a digest of these files, so a changed library is always
-- reloaded even if LIBRARY_VERSION was not bumped (flowfabric_valkey.library).
local SOURCE_DIGEST = '@SOURCE_DIGEST@'
local NULL  -- cjson.null; cjson is only reachable once a function runs (see register)
local WORK_CHANNEL = 'ff:work'


-- -- values and JSON ---------------------------------------------------------------------

local function is_int(v)
  return type(v) == 'number' and v == math.floor(v) and v > -1e18 and v < 1e18
end

local function to_text(v)
  if is_int(v) then return string.format('%d', v) end
  return v
end

-- Python's str() of an optional int, for messages that mirror f-strings.
local function py(v)
  if v == nil or v == NULL then return 'None' end
  return to_text(v)
end

-- A JSON encoder that writes integers exactly (cjson rounds to 14 digits).
local function jenc(v)
  if v == nil or v == NULL then return 'null' end
  local t = type(v)
  if t == 'number' then
    if is_int(v) then return string.format('%d', v) end
    return cjson.encode(v)
  end
  if t == 'table' then
    local parts = {}
    if #v > 0 then  -- a list (answers hold lists of strings only)
      for i = 1, #v do parts[i] = jenc(v[i]) end
      return '[' .. table.concat(parts, ',') .. ']'
    end
    for k, x in pairs(v) do
      parts[#parts + 1] = cjson.encode(tostring(k)) .. ':' .. jenc(x)
    end
    return '{' .. table.concat(parts, ',') .. '}'
  end
  return cjson.encode(v)
end

local function ok(outcome)
  return jenc({ok = outcome})
end

-- A rule's refusal: a kind core.errors knows (its message is built there from the details).
local function fail_with(kind, details)
  if not ERROR_KINDS[kind] then error('flowfabric: unknown error kind ' .. kind) end
  return {err = kind, d = details or {}}
end

-- -- keys ------------------------------------------------------------------------------------

local function tag_of(eid)
  return string.match(eid, '^({fp:%d+})')
end

local function core_key(eid) return 'ff:x:' .. eid end
local function pkey(tag) return 'ff:p:' .. tag .. ':' end

-- -- the record ------------------------------------------------------------------------------

local function load(eid)
  local flat = redis.call('HGETALL', core_key(eid))
  if #flat == 0 then return nil end
  local ex = {}
  for i = 1, #flat, 2 do
    local k, v = flat[i], flat[i + 1]
    if INT_FIELDS[k] then v = tonumber(v) end
    ex[k] = v
  end
  return ex
end

-- Suspension hooks the record's writers call (lua/40_suspension.lua defines them).
local SUSP = {}
-- Attempt-stream hooks (lua/60_streams.lua defines them): closes(eid) when an attempt ends
-- or its lease is lost (streams.closes: tails look again), forget(eid) when it is purged.
local STREAM = {}

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

-- Write back what changed; open waitpoints outlived by their attempt or the execution close
-- first (suspension.leftover_waitpoints, as the SQL stores' write does).
local function save(ex, before)
  if (ex.waitpoints_open or 0) ~= 0 then SUSP.leftover(ex, before) end
  local key = core_key(ex.execution_id)
  local sets, dels = {}, {}
  for k, v in pairs(ex) do
    if before[k] ~= v then
      sets[#sets + 1] = k
      sets[#sets + 1] = to_text(v)
    end
  end
  for k, _ in pairs(before) do
    if ex[k] == nil then dels[#dels + 1] = k end
  end
  if #sets > 0 then redis.call('HSET', key, unpack(sets)) end
  if #dels > 0 then redis.call('HDEL', key, unpack(dels)) end
  if before.ownership_state == 'leased' and (ex.ownership_state == 'lease_expired_reclaimable'
                                             or ex.ownership_state == 'lease_revoked') then
    STREAM.closes(ex.execution_id)
  end
  -- The worker registry's view of leases (list_workers): per partition, the leases each
  -- instance holds (wl:<instance>, by their latest renewal or claim), how many (wleases) and
  -- the latest of those times (wseen).
  local was = before.ownership_state == 'leased' and before.current_worker_instance_id or nil
  local is = ex.ownership_state == 'leased' and ex.current_worker_instance_id or nil
  if was ~= is or (is and ex.lease_last_renewed_at ~= before.lease_last_renewed_at) then
    local p = pkey(tag_of(ex.execution_id))
    local function view(instance)
      local z = p .. 'wl:' .. instance
      local n = redis.call('ZCARD', z)
      if n == 0 then
        redis.call('HDEL', p .. 'wleases', instance)
        redis.call('HDEL', p .. 'wseen', instance)
      else
        redis.call('HSET', p .. 'wleases', instance, n)
        redis.call('HSET', p .. 'wseen', instance,
                   redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')[2])
      end
    end
    if was and was ~= is then
      redis.call('ZREM', p .. 'wl:' .. was, ex.execution_id)
      view(was)
    end
    if is then
      redis.call('ZADD', p .. 'wl:' .. is, ex.lease_last_renewed_at or 0, ex.execution_id)
      view(is)
    end
  end
end

local function flat_record(ex)
  local flat = {}
  for k, v in pairs(ex) do
    flat[#flat + 1] = k
    flat[#flat + 1] = to_text(v)
  end
  return flat
end

-- A stored policy that cannot be decoded reads as the defaults (as policy.load_policy).
local function policy_of(ex)
  if ex.policy == nil or ex.policy == '' then return {} end
  local ok, doc = pcall(cjson.decode, ex.policy)
  if not ok or type(doc) ~= 'table' then return {} end
  return doc
end

local function field(tbl, name)
  if type(tbl) ~= 'table' then return nil end
  local v = tbl[name]
  if v == NULL then return nil end
  return v
end

-- -- attempts --------------------------------------------------------------------------------

local function attempt_new(row)
  redis.call('HSET', core_key(row.execution_id) .. ':att', to_text(row.attempt_index), jenc(row))
end

-- Like SQL's UPDATE ... WHERE attempt_index = ?: nothing happens if the row is missing.
-- A value of NULL clears the column.
local function attempt_update(eid, index, values)
  if index == nil then return end
  if values.ended_at ~= nil then STREAM.closes(eid) end
  local key = core_key(eid) .. ':att'
  local raw = redis.call('HGET', key, to_text(index))
  if not raw then return end
  local row = cjson.decode(raw)
  for k, v in pairs(values) do
    if v == NULL then row[k] = nil else row[k] = v end
  end
  redis.call('HSET', key, to_text(index), jenc(row))
end

-- -- indexes ---------------------------------------------------------------------------------
-- Each index holds a member exactly when its record field is set, so a scanner never looks
-- at the wrong state: sync() is called after every write with the memberships from before.

local function claim_member(ex)
  return string.format('%04d%016d', 9000 - ex.priority, ex.created_at) .. ex.execution_id
end

local function lane_part(lane) return #lane .. ':' .. lane end

local function capsets_key(p, lane) return p .. 'capsets:' .. lane_part(lane) end

local function claim_key(p, lane, caps)
  return p .. 'claim:' .. lane_part(lane) .. ':' .. (caps or '')
end

-- The claim class the execution is indexed by (a record written before admission existed
-- has none: its required capabilities are its class).
local function class_of(ex)
  local cls = ex.claim_class
  if cls == nil or cls == '' then return ex.required_capabilities or '' end
  return cls
end

local function claim_add(p, ex, member)
  local cls = class_of(ex)
  redis.call('ZADD', claim_key(p, ex.lane_id, cls), 0, member)
  redis.call('SADD', capsets_key(p, ex.lane_id), cls)
end

local function claim_remove(p, ex, member)
  local cls = class_of(ex)
  local key = claim_key(p, ex.lane_id, cls)
  if redis.call('ZREM', key, member) == 1 and redis.call('ZCARD', key) == 0 then
    redis.call('SREM', capsets_key(p, ex.lane_id), cls)
  end
end

-- Where the execution belongs: its claim index, and each scanner's index (SCANNERS, from
-- core.scanners) while its clock is set and its condition holds.
local function memberships(ex)
  local m = {}
  if ex.claimable == 1 then m.claim = claim_member(ex) end
  -- admission.holds_slot: leased or granted holds a slot of its quota
  if (ex.quota_policy_id or '') ~= '' and (ex.ownership_state == 'leased'
                                           or ex.grant_expires_at ~= nil) then
    m.slot = ex.quota_policy_id
  end
  for _, s in ipairs(SCANNERS) do
    if s.only_field == '' or ex[s.only_field] == s.only_value then m[s.index] = ex[s.clock] end
  end
  return m
end

-- Lanes that gained claimable work in this call ("<partition>:<lane>"), published at the end,
-- and how many executions became claimable; woken_lanes names the lane once per execution
-- made claimable (what the call answers, so the caller wakes as many claims).
local woken = {}
local woken_lanes = {}
local made_claimable = 0
-- Quotas a slot of which this call freed and budgets it reset, published as
-- "<origin>|q:<quota>" / "<origin>|b:<budget>": claims of any lane held back by them look
-- again (admission.wake_key; the caller's own claims hear of a freed slot from the call's
-- answer, which names the wake key like a lane).
local freed = {}
-- Flow members this call ended or brought back from an end (lua/30_flows.lua resolves their
-- edges once the call's own writes are done), and the flow functions, defined there.
local moves = {ended = {}, back = {}}
local FLOW = {}
-- The appliance calling (its args' _o), named in what the call publishes so that its own
-- notifications, already acted on, come back recognisable.
local origin = ''

-- When the lane's work on this partition is next claimable, kept in ff:p:{fp:N}:lanes so a
-- claim can tell which partitions are worth a call (see flowfabric_valkey.lanes).
local function lane_score(p, lane)
  if redis.call('SCARD', capsets_key(p, lane)) > 0 then return 0 end
  local first = redis.call('ZRANGE', p .. 'delayed:' .. lane, 0, 0, 'WITHSCORES')
  if first[2] then return tonumber(first[2]) end
  return nil
end

local function refresh_lane(p, lane)
  local score = lane_score(p, lane)
  if score then
    redis.call('ZADD', p .. 'lanes', score, lane)
  else
    redis.call('ZREM', p .. 'lanes', lane)
  end
end

local function sync(ex, before, force)
  local p = pkey(tag_of(ex.execution_id))
  local eid, lane = ex.execution_id, ex.lane_id
  local now = memberships(ex)
  local lane_changed = force or before.claim ~= now.claim or before.delayed ~= now.delayed
  local wake = false
  if force or before.claim ~= now.claim then
    if before.claim then claim_remove(p, ex, before.claim) end
    if force and not now.claim then claim_remove(p, ex, claim_member(ex)) end
    if now.claim then
      claim_add(p, ex, now.claim)
      if not before.claim then
        wake = true
        made_claimable = made_claimable + 1
      end
    end
  end
  if wake then
    woken[ex.partition_id .. ':' .. lane] = lane
    woken_lanes[#woken_lanes + 1] = lane
  end
  -- It stopped holding a slot of its quota: claims held back by the quota look again (its
  -- wake key, as ops.write reports it).
  if before.slot and not now.slot then
    freed['q:' .. before.slot] = true
    woken_lanes[#woken_lanes + 1] = WAKE_KEYS.quota .. before.slot
  end
  for _, s in ipairs(SCANNERS) do
    local name = s.index
    if force or before[name] ~= now[name] then
      local keys = {p .. name}
      if name == 'delayed' then keys[2] = p .. 'delayed:' .. lane end
      for _, key in ipairs(keys) do
        if now[name] then
          redis.call('ZADD', key, now[name], eid)
        else
          redis.call('ZREM', key, eid)
        end
      end
    end
  end
  if lane_changed then refresh_lane(p, lane) end
end

local function unindex(ex)
  local p = pkey(tag_of(ex.execution_id))
  local eid = ex.execution_id
  claim_remove(p, ex, claim_member(ex))
  for _, s in ipairs(SCANNERS) do redis.call('ZREM', p .. s.index, eid) end
  redis.call('ZREM', p .. 'delayed:' .. ex.lane_id, eid)
  redis.call('ZREM', p .. 'all', eid)
  refresh_lane(p, ex.lane_id)
  STREAM.forget(eid)  -- unindexed only when purged: its streams go with it
end

-- Publish the lanes this call made claimable (for other appliances, once each) and return
-- them (for the caller's own wake-up, once per execution made claimable). A message is
-- "<origin>|<partition>:<lane>".
local function publish_woken()
  for where, _ in pairs(woken) do
    redis.call('PUBLISH', WORK_CHANNEL, origin .. '|' .. where)
  end
  for where, _ in pairs(freed) do
    redis.call('PUBLISH', WORK_CHANNEL, origin .. '|' .. where)
  end
  local lanes = woken_lanes
  woken, woken_lanes, made_claimable, origin, freed = {}, {}, 0, '', {}
  return lanes
end

-- What a call starts from: nothing woken, no flow member moved.
local function fresh_call()
  NULL = cjson.null
  woken, woken_lanes, made_claimable, origin, freed = {}, {}, 0, '', {}
  moves = {ended = {}, back = {}}
end

-- ARGV[1], decoded; it names the appliance calling.
local function args_of(argv)
  local a = cjson.decode(argv[1])
  origin = a._o or ''
  return a
end
