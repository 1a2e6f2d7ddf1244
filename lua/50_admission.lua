-- Part 3d: admission (spec/admission.md): claim grants redeemed and reclaimed, budgets,
-- quotas and the worker registry, mirroring appliance/backend/sql/admission.py and
-- core/admission.py. The claim pipeline itself is lease_best (20_functions.lua).
--
-- Keys (budgets and quotas have partitions of their own, crc16 of the id's 16 bytes modulo
-- num_budget_partitions / num_quota_partitions; a call touches one slot):
--   ff:b:{b:M}:<budget_id>           HASH  a budget: the columns of admission.Budget (limits
--                                          as JSON {dim: [hard, soft]}) and u:<dim> -> usage
--                                          (a decimal integer, exact however large)
--   ff:b:{b:M}:<budget_id>:dd:<key>  STRING a usage report's dedup key: when it is forgotten
--                                          (appliance time; PX only collects garbage)
--   ff:bp:{b:M}:reset                ZSET  budget id -> next_reset_at (the reset scanner)
--   ff:q:{q:K}:<quota_id>            HASH  a quota policy (admission.Quota) and seq, the
--                                          admission counter
--   ff:q:{q:K}:<quota_id>:win        ZSET  the rate window: "<eid>|<admitted_at>" by
--                                          admitted_at, and reservations "r:<token>:<i>"
--   ff:q:{q:K}:<quota_id>:hold       ZSET  the slot holders: eid -> the seq of its admission;
--                                          reservations "r:<token>:<i>" -> -1
--   ff:q:{q:K}:<quota_id>:prov       ZSET  reservations not yet committed: "<token>:<n>" by
--                                          when they were made (dropped after a grace)
--   ff:qp:{q:K}:all                  SET   the quota ids of the partition (the reconciler)
--   ff:{cfg}:worker:<instance>       HASH  a worker registry entry (admission.Worker)
--   ff:{cfg}:workers                 ZSET  instance ids (score 0, lex order, for listing)
--   ff:{cfg}:workers_seen            ZSET  instance id -> last_seen_at + liveness_ttl_ms
--
-- A claim of limited work reserves room on each quota first (quota_reserve, provisional
-- entries counted as admissions and holders), takes what the room allows on the execution's
-- partition (lease_best), then commits (quota_commit: the reservation becomes one window
-- entry and one holder per execution admitted, the rest is released). A holder whose record
-- no longer holds a slot (admission.holds_slot) is dropped by the appliance (quota_drop,
-- compare-and-remove on the seq it saw): save() cannot reach the quota's slot.
-- Everything here is inside one function (the main chunk is near Lua's limit of 200
-- locals); the functions 90_register registers are fields of ADM.

local ADM = {}

local function define_admission()

-- -- exact decimal integers (usage may outgrow a double's 53 bits) -----------------------------

-- x + y, both non-negative decimal strings.
local function dec_add(x, y)
  if #x < 16 and #y < 16 then return string.format('%d', tonumber(x) + tonumber(y)) end
  local out, carry, i, j = {}, 0, #x, #y
  while i > 0 or j > 0 or carry > 0 do
    local d = carry + (i > 0 and string.byte(x, i) - 48 or 0)
              + (j > 0 and string.byte(y, j) - 48 or 0)
    out[#out + 1] = string.char(48 + d % 10)
    carry = math.floor(d / 10)
    i, j = i - 1, j - 1
  end
  return string.reverse(table.concat(out))
end

-- x (a decimal string) > n (a number below 2^53).
local function dec_gt(x, n)
  if #x > 16 then return true end
  return tonumber(x) > n
end

-- A JSON list of strings (cjson writes an empty table as {}).
local function jlist(items)
  local parts = {}
  for i, v in ipairs(items) do parts[i] = cjson.encode(v) end
  return '[' .. table.concat(parts, ',') .. ']'
end

local function tag_in(key, kind)
  return string.match(key, '({' .. kind .. ':%d+})')
end

-- -- claim grants ------------------------------------------------------------------------------

-- Redeem the grant this worker holds (admission.check_grant), then lease as a claim does:
-- {answer JSON, record, payload}; refusals are answers ({err}), a missing record {missing}.
ADM.redeem = function(keys, argv)
  local a = args_of(argv)
  local c = ctx(a)
  local eid = eid_of(keys[1])
  local ex = load(eid)
  if not ex then return {missing = true} end
  if ex.grant_worker_id == nil or ex.grant_worker_id ~= a.worker_id then
    return fail_with('invalid_claim_grant', {execution_id = eid, worker_id = a.worker_id})
  end
  if ex.grant_expires_at ~= nil and ex.grant_expires_at < c.now then
    return fail_with('claim_grant_expired', {execution_id = eid,
                                             expires_at = ex.grant_expires_at})
  end
  local before, indexed = copy(ex), memberships(ex)
  ex.claimable = is_claimable(ex.lifecycle_phase, ex.ownership_state, ex.eligibility_state)
                 and 1 or 0
  ex.grant_worker_id, ex.grant_expires_at = nil, nil
  local _, attempt_type = rule_claim(ex, c, a)
  save(ex, before)
  sync(ex, indexed)
  if not attempt_type then  -- the reclaim cap ended it
    FLOW.note(ex, false)
    FLOW.finish(c)
    return not_active(ex)
  end
  return {ok = {attempt_type = attempt_type}},
         {flat_record(ex), redis.call('GET', core_key(eid) .. ':in') or ''}
end

-- Grant a reclaimable execution (the appliance checked admission.reclaim_refusal and the
-- admission of its class on the record it read): {ok = expires_at}, or {changed} when the
-- record is no longer what the appliance judged (it reads it again).
ADM.reclaim_grant = function(keys, argv)
  local a = args_of(argv)
  local c = ctx(a)
  local ex = load(eid_of(keys[1]))
  if not ex then return {missing = true} end
  if ex.lifecycle_phase ~= 'active' or not RECLAIMABLE[ex.ownership_state]
      or ex.claimable ~= 1 or ex.grant_worker_id ~= nil or ex.lane_id ~= a.lane_id
      or ex.current_lease_epoch ~= a.lease_epoch
      or ex.lease_reclaim_count ~= a.reclaim_count then
    return {changed = true}
  end
  local before, indexed = copy(ex), memberships(ex)
  grant_one(ex, c, a.worker_id, a.grant_ttl_ms)
  save(ex, before)
  sync(ex, indexed)
  return {ok = ex.grant_expires_at}
end

-- -- budgets -----------------------------------------------------------------------------------

local function budget_index(B) return 'ff:bp:' .. tag_in(B, 'b') .. ':reset' end

-- A new budget (fields as the appliance wrote them); false when the id is taken.
ADM.budget_create = function(keys, argv)
  local a = args_of(argv)
  local B = keys[1]
  if redis.call('EXISTS', B) == 1 then return {ok = false} end
  redis.call('HSET', B, unpack(a.fields))
  if a.next_reset_at then
    redis.call('ZADD', budget_index(B), a.next_reset_at, a.budget_id)
  end
  return {ok = true}
end

ADM.budget_get = function(keys)
  return redis.call('HGETALL', keys[1])
end

-- admission.report_usage: check every dimension, then increment all or none. a.dims is
-- [[dim, delta as text]...] in the report's order; a.at the report's time (its now, or
-- the appliance's); a.now the appliance's (dedup keys). Usages answer as text.
ADM.budget_report = function(keys, argv)
  local a = args_of(argv)
  local B = keys[1]
  if redis.call('EXISTS', B) == 0 then
    return fail_with('budget_not_found', {budget_id = a.budget_id})
  end
  local dd = a.dedup_key and (B .. ':dd:' .. a.dedup_key)
  if dd then
    local seen = redis.call('GET', dd)
    if seen and tonumber(seen) > a.now then return {ok = 'AlreadyApplied'} end
  end
  local limits = cjson.decode(redis.call('HGET', B, 'limits') or '{}')
  local function limit(dim, i)
    local v = limits[dim]
    if type(v) ~= 'table' then return 0 end
    return tonumber(v[i]) or 0
  end
  for _, pair in ipairs(a.dims) do
    local dim, delta = pair[1], pair[2]
    local hard = limit(dim, 1)
    local current = redis.call('HGET', B, 'u:' .. dim) or '0'
    if hard > 0 and dec_gt(dec_add(current, delta), hard) then
      redis.call('HINCRBY', B, 'breach_count', 1)
      redis.call('HSET', B, 'last_breach_at', to_text(a.at), 'last_breach_dim', dim,
                 'last_updated_at', to_text(a.at))
      return {ok = {HardBreach = {dimension = dim, current_usage = current,
                                  limit = to_text(hard)}}}
    end
  end
  local soft_breach
  for _, pair in ipairs(a.dims) do
    local dim, delta = pair[1], pair[2]
    local after = dec_add(redis.call('HGET', B, 'u:' .. dim) or '0', delta)
    redis.call('HSET', B, 'u:' .. dim, after)
    local soft = limit(dim, 2)
    if soft_breach == nil and soft > 0 and dec_gt(after, soft) then
      soft_breach = {dimension = dim, current_usage = after, limit = to_text(soft)}
    end
  end
  redis.call('HSET', B, 'last_updated_at', to_text(a.at))
  if soft_breach then redis.call('HINCRBY', B, 'soft_breach_count', 1) end
  if dd then
    redis.call('SET', dd, to_text(a.now + a.dedup_ttl_ms), 'PX',
               to_text(a.dedup_ttl_ms + a.dedup_grace_ms))
  end
  if soft_breach then return {ok = {SoftBreach = soft_breach}} end
  return {ok = 'Ok'}
end

-- admission.reset_budget; the next reset time (0: none). Claims held back by the budget
-- look again.
local function reset_one(B, budget_id, now)
  local flat = redis.call('HGETALL', B)
  local interval = 0
  local sets = {}
  for i = 1, #flat, 2 do
    local k = flat[i]
    if string.sub(k, 1, 2) == 'u:' then
      sets[#sets + 1] = k
      sets[#sets + 1] = '0'
    elseif k == 'reset_interval_ms' then
      interval = tonumber(flat[i + 1]) or 0
    end
  end
  local next_at = interval > 0 and now + interval or nil
  sets[#sets + 1] = 'last_reset_at'
  sets[#sets + 1] = to_text(now)
  sets[#sets + 1] = 'last_updated_at'
  sets[#sets + 1] = to_text(now)
  redis.call('HSET', B, unpack(sets))
  redis.call('HINCRBY', B, 'reset_count', 1)
  redis.call('HDEL', B, 'last_breach_at', 'last_breach_dim')
  if next_at then
    redis.call('HSET', B, 'next_reset_at', to_text(next_at))
    redis.call('ZADD', budget_index(B), next_at, budget_id)
  else
    redis.call('HDEL', B, 'next_reset_at')
    redis.call('ZREM', budget_index(B), budget_id)
  end
  freed['b:' .. budget_id] = true
  return next_at or 0
end

ADM.budget_reset = function(keys, argv)
  local a = args_of(argv)
  if redis.call('EXISTS', keys[1]) == 0 then
    return fail_with('budget_not_found', {budget_id = a.budget_id})
  end
  return {ok = reset_one(keys[1], a.budget_id, a.now)}
end

-- The reset scanner on one budget partition (KEYS[1]: its reset index): each of a.ids whose
-- next_reset_at came; the ids reset.
ADM.budget_reset_due = function(keys, argv)
  local a = args_of(argv)
  local tag = tag_in(keys[1], 'b')
  local done = {}
  for _, id in ipairs(a.ids) do
    local B = 'ff:b:' .. tag .. ':' .. id
    local at = tonumber(redis.call('HGET', B, 'next_reset_at') or '')
    if at and at <= a.now then
      reset_one(B, id, a.now)
      done[#done + 1] = id
    elseif not at then
      redis.call('ZREM', keys[1], id)
    end
  end
  return {ok = done}
end

-- -- quotas ------------------------------------------------------------------------------------

local UNLIMITED = 1073741824

local function quota_load(Q)
  local v = redis.call('HMGET', Q, 'quota_policy_id', 'window_seconds',
                       'max_requests_per_window', 'max_concurrent', 'created_at')
  if not v[1] then return nil end
  return {id = v[1], window_ms = (tonumber(v[2]) or 0) * 1000, rate = tonumber(v[3]) or 0,
          conc = tonumber(v[4]) or 0, created_at = tonumber(v[5]) or 0,
          window_seconds = tonumber(v[2]) or 0}
end

-- Quota.room: how many more may be admitted now, and if none why (rate: when).
local function quota_room(q, active, in_window, oldest, now)
  local room = UNLIMITED
  if q.rate > 0 then
    room = q.rate - in_window
    if room <= 0 then return 0, 'rate', math.max((oldest or now) + q.window_ms - now, 1) end
  end
  if q.conc > 0 then
    local free = q.conc - active
    if free <= 0 then return 0, 'concurrency', 0 end
    room = math.min(room, free)
  end
  return room, '', 0
end

local function release(Q, token, n)
  for i = 1, n do
    local member = 'r:' .. token .. ':' .. i
    redis.call('ZREM', Q .. ':win', member)
    redis.call('ZREM', Q .. ':hold', member)
  end
  redis.call('ZREM', Q .. ':prov', token .. ':' .. n)
end

-- Window entries that left the window, and reservations older than the grace (an appliance
-- that reserved died before committing); how many entries went. An entry is kept a grace
-- past its window: claims reserve with the time they started at, so a reservation may come
-- after one of a later time, and must still count what its own window holds.
local function quota_tidy(Q, q, now, grace)
  local gone = 0
  if q.rate > 0 then
    gone = redis.call('ZREMRANGEBYSCORE', Q .. ':win', '-inf', now - q.window_ms - grace)
  end
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', Q .. ':prov', '-inf', now - grace)) do
    local token, n = string.match(member, '^(.*):(%d+)$')
    release(Q, token, tonumber(n))
    gone = gone + 1
  end
  return gone
end

-- The window at `now`: (admissions after now - window, the oldest of them's time or nil).
-- Those of a later time count too: a window holding `now` may hold them.
local function quota_window(Q, q, now)
  if q.rate <= 0 then return 0, nil end
  local from = '(' .. to_text(now - q.window_ms)
  local first = redis.call('ZRANGEBYSCORE', Q .. ':win', from, '+inf', 'WITHSCORES', 'LIMIT',
                           0, 1)
  return redis.call('ZCOUNT', Q .. ':win', from, '+inf'), tonumber(first[2])
end

-- Up to `limit` holders (not reservations), oldest admission first: [[eid, seq]...].
local function holders(Q, limit)
  local flat = redis.call('ZRANGEBYSCORE', Q .. ':hold', 0, '+inf', 'WITHSCORES', 'LIMIT', 0,
                          limit)
  local out = {}
  for i = 1, #flat, 2 do out[#out + 1] = {flat[i], tonumber(flat[i + 1])} end
  return out
end

ADM.quota_create = function(keys, argv)
  local a = args_of(argv)
  local Q = keys[1]
  if redis.call('EXISTS', Q) == 1 then return {ok = false} end
  redis.call('HSET', Q, 'quota_policy_id', a.quota_policy_id,
             'window_seconds', to_text(a.window_seconds),
             'max_requests_per_window', to_text(a.max_requests_per_window),
             'max_concurrent', to_text(a.max_concurrent), 'created_at', to_text(a.created_at),
             'seq', '0')
  redis.call('SADD', 'ff:qp:' .. tag_in(Q, 'q') .. ':all', a.quota_policy_id)
  return {ok = true}
end

-- Reserve room for up to a.want admissions under token a.token: {n, reason, retry, left,
-- holders} (holders: the oldest, when the concurrency cap is what limits, for the
-- appliance to check), or {none} for a quota that does not exist (it limits nothing).
ADM.quota_reserve = function(keys, argv)
  local a = args_of(argv)
  local Q = keys[1]
  local q = quota_load(Q)
  if not q then return {ok = {none = true}} end
  quota_tidy(Q, q, a.now, a.grace_ms)
  local in_window, oldest = quota_window(Q, q, a.now)
  local active = redis.call('ZCARD', Q .. ':hold')
  local room, reason, retry = quota_room(q, active, in_window, oldest, a.now)
  local n = math.min(a.want, room)
  for i = 1, n do
    local member = 'r:' .. a.token .. ':' .. i
    if q.rate > 0 then redis.call('ZADD', Q .. ':win', a.now, member) end
    redis.call('ZADD', Q .. ':hold', -1, member)
  end
  if n > 0 then redis.call('ZADD', Q .. ':prov', a.now, a.token .. ':' .. n) end
  local out = {n = n, reason = reason, retry = retry, left = room - n, rate = q.rate,
               window_seconds = q.window_seconds, conc = q.conc}
  if q.conc > 0 and n < a.want and active + n >= q.conc then
    out.holders = holders(Q, a.check)
  end
  return {ok = out}
end

-- The claim is done: its reservations (a.tokens, [[token, n]...]) become one window entry
-- and one holder per execution admitted (a.used), the rest is released (a.wake: claims held
-- back by the quota look again).
ADM.quota_commit = function(keys, argv)
  local a = args_of(argv)
  local Q = keys[1]
  for _, t in ipairs(a.tokens or {}) do release(Q, t[1], t[2]) end
  local q = quota_load(Q)
  if not q then return {ok = 0} end
  for _, eid in ipairs(a.used or {}) do
    if q.rate > 0 then redis.call('ZADD', Q .. ':win', a.now, eid .. '|' .. to_text(a.now)) end
    redis.call('ZADD', Q .. ':hold', redis.call('HINCRBY', Q, 'seq', 1), eid)
  end
  if a.wake then freed['q:' .. q.id] = true end
  return {ok = #(a.used or {})}
end

-- Drop holders whose record no longer holds a slot (a.drop, [[eid, seq]...]), each only if
-- its admission is still the one the appliance saw; how many went.
ADM.quota_drop = function(keys, argv)
  local a = args_of(argv)
  local Q = keys[1]
  local n = 0
  for _, d in ipairs(a.drop) do
    if tonumber(redis.call('ZSCORE', Q .. ':hold', d[1])) == d[2] then
      redis.call('ZREM', Q .. ':hold', d[1])
      n = n + 1
    end
  end
  local q = quota_load(Q)
  if n > 0 and q then freed['q:' .. q.id] = true end
  return {ok = n}
end

-- GET /v1/quotas/{id}: the policy, the window, up to a.limit holders and how many there are
-- (the appliance counts those whose record holds), or {none}.
ADM.quota_view = function(keys, argv)
  local a = args_of(argv)
  local Q = keys[1]
  local q = quota_load(Q)
  if not q then return {ok = {none = true}} end
  quota_tidy(Q, q, a.now, a.grace_ms)
  local in_window, oldest = quota_window(Q, q, a.now)
  return {ok = {quota_policy_id = q.id, window_seconds = q.window_seconds,
                max_requests_per_window = q.rate, max_concurrent = q.conc,
                created_at = q.created_at, in_window = in_window, oldest = oldest,
                holders = holders(Q, a.limit),
                held = redis.call('ZCOUNT', Q .. ':hold', 0, '+inf')}}
end

-- The quota reconciler on one quota partition (KEYS[1]: ff:qp:{q:K}:all), from SSCAN cursor
-- a.cursor: each quota's window trimmed and dead reservations dropped; up to a.limit holders
-- of each, to check. Answers the next cursor ('0': the partition is done).
ADM.quota_sweep = function(keys, argv)
  local a = args_of(argv)
  local tag = tag_in(keys[1], 'q')
  local gone, found = 0, {}
  local scan = redis.call('SSCAN', keys[1], a.cursor or '0', 'COUNT', a.limit)
  for _, id in ipairs(scan[2]) do
    local Q = 'ff:q:' .. tag .. ':' .. id
    local q = quota_load(Q)
    if q then
      gone = gone + quota_tidy(Q, q, a.now, a.grace_ms)
      local list = holders(Q, a.limit)
      if #list > 0 then found[#found + 1] = {id, list} end
    end
  end
  return {ok = {gone = gone, holders = found, cursor = scan[1]}}
end

-- -- the worker registry -----------------------------------------------------------------------

local WORKERS, SEEN = 'ff:{cfg}:workers', 'ff:{cfg}:workers_seen'

-- admission.merge_worker, and InstanceIdReassigned for an explicit registration of an
-- instance another worker id holds; true when the entry is new.
ADM.worker_register = function(keys, argv)
  local a = args_of(argv)
  local W = keys[1]
  local stored = redis.call('HMGET', W, 'worker_id', 'lanes', 'registered_at',
                            'liveness_ttl_ms')
  if stored[1] and a.explicit and stored[1] ~= a.worker_id then
    return fail_with('instance_id_reassigned', {worker_instance_id = a.worker_instance_id,
                                                registered_worker_id = stored[1],
                                                worker_id = a.worker_id})
  end
  local lanes = a.lanes or {}
  local registered, ttl = a.registered_at, a.liveness_ttl_ms
  if stored[1] then
    registered = tonumber(stored[3]) or registered
    if not a.explicit then
      -- a claim adds its lane and keeps the liveness TTL the entry has
      ttl = tonumber(stored[4]) or ttl
      local union, seen = {}, {}
      local ok, old = pcall(cjson.decode, stored[2] or '[]')
      for _, list in ipairs({ok and type(old) == 'table' and old or {}, lanes}) do
        for _, lane in ipairs(list) do
          if not seen[lane] then
            seen[lane] = true
            union[#union + 1] = lane
          end
        end
      end
      table.sort(union)
      lanes = union
    end
  end
  redis.call('HSET', W, 'worker_id', a.worker_id, 'worker_instance_id', a.worker_instance_id,
             'lanes', jlist(lanes), 'capabilities', jlist(a.capabilities or {}),
             'liveness_ttl_ms', to_text(ttl),
             'registered_at', to_text(registered), 'last_seen_at', to_text(a.last_seen_at))
  redis.call('ZADD', WORKERS, 0, a.worker_instance_id)
  redis.call('ZADD', SEEN, a.last_seen_at + ttl, a.worker_instance_id)
  return {ok = not stored[1]}
end

-- Forget entries not seen for long (a.gone, [[instance, last_seen_at + ttl]...]), each only
-- if it was not seen since the appliance looked; how many went.
ADM.worker_forget = function(keys, argv)
  local a = args_of(argv)
  local n = 0
  for _, g in ipairs(a.gone) do
    if tonumber(redis.call('ZSCORE', SEEN, g[1])) == g[2] then
      redis.call('DEL', 'ff:{cfg}:worker:' .. g[1])
      redis.call('ZREM', SEEN, g[1])
      redis.call('ZREM', WORKERS, g[1])
      n = n + 1
    end
  end
  return {ok = n}
end

end
define_admission()
