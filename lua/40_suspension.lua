-- Part 3c: suspension, waitpoints and signals (spec/suspension.md), mirroring
-- appliance/backend/sql/suspension.py call for call and core/suspension.py, core/conditions.py
-- and core/tokens.py rule for rule. Keys: see the header of 00_library.lua (a waitpoint and
-- its signals live on their execution's partition). SUSPENSION (constants) comes from the
-- generated prelude.
--
-- The suspension is JSON on the record (field suspension) as Python writes it, lists kept
-- lists when empty (sjson). Tokens are minted by the appliance; the store only checks the kid
-- against its keystore replica and compares the token with the one stored on the waitpoint.
-- Everything here is inside one function (the library's main chunk is near Lua's limit of
-- 200 locals); the hooks and the functions 90_register registers are fields of SUSP.

local function define_suspension()
local S = SUSPENSION

-- -- the suspension's JSON ---------------------------------------------------------------------

-- Members that are lists whatever they hold (cjson would write an empty one as {}).
local LISTS = {satisfied = true, satisfiers = true, waitpoints = true, members = true}

local function sjson(v, list)
  if v == nil or v == NULL then return 'null' end
  local t = type(v)
  if t == 'table' then
    local parts = {}
    if list or #v > 0 then
      for i = 1, #v do parts[i] = sjson(v[i]) end
      return '[' .. table.concat(parts, ',') .. ']'
    end
    for k, x in pairs(v) do
      parts[#parts + 1] = cjson.encode(tostring(k)) .. ':' .. sjson(x, LISTS[k])
    end
    return '{' .. table.concat(parts, ',') .. '}'
  end
  if t == 'number' and is_int(v) then return string.format('%d', v) end
  return cjson.encode(v)
end

local function load_s(ex)
  if ex.suspension == nil or ex.suspension == '' then return nil end
  return cjson.decode(ex.suspension)
end

local function store_s(ex, s)
  if s == nil then ex.suspension = nil else ex.suspension = sjson(s) end
end

local function is_open(s)
  return s ~= nil and field(s, 'closed_at') == nil
end

local function close_s(s, reason, now)
  s.closed_at, s.close_reason = now, reason
end

-- transitions._close_suspension: set_state leaving `suspended` closes an open suspension.
SUSP.close_json = function(ex, reason, now)
  local s = load_s(ex)
  if s ~= nil and field(s, 'closed_at') == nil then
    close_s(s, reason, now)
    store_s(ex, s)
  end
end

-- -- waitpoints and signals -------------------------------------------------------------------

local function wp_key(tag, wid) return 'ff:w:' .. tag .. ':' .. wid end
local function sig_key(eid, sid) return core_key(eid) .. ':sig:' .. sid end

local function typed(flat, ints)
  if #flat == 0 then return nil end
  local r = {}
  for i = 1, #flat, 2 do
    local k, v = flat[i], flat[i + 1]
    if ints[k] then v = tonumber(v) end
    r[k] = v
  end
  return r
end

local function wp_load(tag, wid)
  return typed(redis.call('HGETALL', wp_key(tag, wid)), S.wp_int_fields)
end

-- Write the waitpoint (`before`: as loaded, nil when new), its execution's open set and the
-- partition's pending-expiry index along.
local function wp_save(tag, wp, before)
  local key, wid = wp_key(tag, wp.waitpoint_id), wp.waitpoint_id
  local sets, dels = {}, {}
  for k, v in pairs(wp) do
    if before == nil or before[k] ~= v then
      sets[#sets + 1] = k
      sets[#sets + 1] = to_text(v)
    end
  end
  for k, _ in pairs(before or {}) do
    if wp[k] == nil then dels[#dels + 1] = k end
  end
  if #sets > 0 then redis.call('HSET', key, unpack(sets)) end
  if #dels > 0 then redis.call('HDEL', key, unpack(dels)) end
  local x = core_key(wp.execution_id)
  if before == nil then redis.call('SADD', x .. ':wps', wid) end
  if wp.state ~= 'closed' then
    redis.call('SADD', x .. ':wpopen', wid)
  else
    redis.call('SREM', x .. ':wpopen', wid)
  end
  local pending = pkey(tag) .. 'wp_pending'
  if wp.state == 'pending' and wp.expires_at ~= nil then
    redis.call('ZADD', pending, wp.expires_at, wid)
  elseif before and before.state == 'pending' then
    redis.call('ZREM', pending, wid)
  end
end

-- The execution's open waitpoints (state <> 'closed').
local function open_waitpoints(eid)
  local tag, found = tag_of(eid), {}
  for _, wid in ipairs(redis.call('SMEMBERS', core_key(eid) .. ':wpopen')) do
    local wp = wp_load(tag, wid)
    if wp and wp.state ~= 'closed' then found[#found + 1] = wp end
  end
  return found
end

-- The CloseWaitpoints write: the execution's open waitpoints (`ids`: only these) close.
local function close_waitpoints(eid, ids, reason, now)
  local only
  if ids then
    only = {}
    for _, id in ipairs(ids) do only[id] = true end
  end
  local tag = tag_of(eid)
  for _, wp in ipairs(open_waitpoints(eid)) do
    if only == nil or only[wp.waitpoint_id] then
      local before = copy(wp)
      wp.state, wp.closed_at, wp.close_reason = 'closed', now, reason
      wp_save(tag, wp, before)
    end
  end
end

-- leftover_waitpoints, from save(): open waitpoints outlive neither their attempt nor the
-- execution.
SUSP.leftover = function(ex, before)
  local reason
  if ex.lifecycle_phase == 'terminal' then
    reason = ex.terminal_outcome
  elseif ex.current_attempt_index ~= before.current_attempt_index
      or ex.attempt_state == 'pending_retry_attempt' then  -- a retry ends the attempt first
    reason = 'attempt_ended'
  else
    return
  end
  ex.waitpoints_open = 0
  close_waitpoints(ex.execution_id, nil, reason, ex.last_mutation_at or 0)
end

-- A purged execution takes its waitpoints and signals along.
SUSP.forget = function(ex)
  local eid = ex.execution_id
  local tag, x = tag_of(eid), core_key(eid)
  for _, wid in ipairs(redis.call('SMEMBERS', x .. ':wps')) do
    local key = wp_key(tag, wid)
    redis.call('DEL', key, key .. ':sigs', key .. ':idem')
    redis.call('ZREM', pkey(tag) .. 'wp_pending', wid)
  end
  for _, sid in ipairs(redis.call('ZRANGE', x .. ':sigs', 0, -1)) do
    redis.call('DEL', sig_key(eid, sid))
  end
  redis.call('DEL', x .. ':wps', x .. ':wpopen', x .. ':sigs')
end

local function by_seq(a, b) return a.seq < b.seq end

-- The signals `ids` of the execution as flat records, in the order they came (seq).
local function signal_rows(eid, ids)
  local found = {}
  for _, sid in ipairs(ids or {}) do
    local flat = redis.call('HGETALL', sig_key(eid, sid))
    if #flat > 0 then
      local seq = 0
      for i = 1, #flat, 2 do
        if flat[i] == 'seq' then seq = tonumber(flat[i + 1]) end
      end
      found[#found + 1] = {seq = seq, flat = flat}
    end
  end
  table.sort(found, by_seq)
  local rows = {}
  for i, f in ipairs(found) do rows[i] = f.flat end
  return rows
end

-- -- resume conditions (core.conditions) -----------------------------------------------------

local function walk(tree, out)
  out[#out + 1] = tree
  for _, member in ipairs(field(tree, 'members') or {}) do walk(member, out) end
  return out
end

-- The single and count nodes that name waitpoint `key`.
local function mentioning(tree, key)
  local found = {}
  for _, node in ipairs(walk(tree, {})) do
    if node.kind == 'single' then
      if node.waitpoint_key == key then found[#found + 1] = node end
    elseif node.kind == 'count' then
      for _, k in ipairs(node.waitpoints) do
        if k == key then
          found[#found + 1] = node
          break
        end
      end
    end
  end
  return found
end

local function holds(tree, satisfied)
  local kind = tree.kind
  if kind == 'single' then
    local token = tree.path .. '|leaf'
    for _, t in ipairs(satisfied) do
      if t == token then return true end
    end
    return false
  end
  if kind == 'count' then
    local prefix, n = tree.path .. '|', 0
    for _, t in ipairs(satisfied) do
      if string.sub(t, 1, #prefix) == prefix then n = n + 1 end
    end
    return n >= tree.n
  end
  if kind == 'all_of' then
    for _, member in ipairs(tree.members) do
      if not holds(member, satisfied) then return false end
    end
    return true
  end
  return false
end

-- conditions.offer: the signal's effect and the satisfier tokens it adds.
local function offer(tree, satisfied, key, wid, sid, name, source)
  local candidates = mentioning(tree, key)
  if #candidates == 0 then return S.not_in_condition, {} end
  local have, added, accepted = {}, {}, false
  for _, t in ipairs(satisfied) do have[t] = true end
  for _, node in ipairs(candidates) do
    local want = field(node, 'name')
    if want == nil or want == name then
      accepted = true
      local token
      if node.kind == 'single' then
        token = node.path .. '|leaf'
      elseif node.count_kind == 'DistinctWaitpoints' then
        token = node.path .. '|wp:' .. wid
      elseif node.count_kind == 'DistinctSignals' then
        token = node.path .. '|sig:' .. sid
      else
        token = node.path .. '|src:' .. source
      end
      if not have[token] then
        have[token] = true
        added[#added + 1] = token
      end
    end
  end
  if not accepted then return S.matcher_failed, {} end
  if #added == 0 then return S.duplicate, {} end
  local all = {}
  for _, t in ipairs(satisfied) do all[#all + 1] = t end
  for _, t in ipairs(added) do all[#all + 1] = t end
  return holds(tree, all) and S.satisfied or S.appended, added
end

local function append(list, items)
  for _, item in ipairs(items) do list[#list + 1] = item end
end

-- -- the keystore replica (core.tokens) ----------------------------------------------------------
-- {current, secrets = {kid: hex}, expires = {kid: text of ms}}; expiries stay text so a grace
-- up to 2^53 - 1 ms is stored exactly.

local function keys_key(tag) return pkey(tag) .. 'wpkeys' end

local function keys_load(tag)
  local flat = redis.call('HGETALL', keys_key(tag))
  local k = {secrets = {}, expires = {}}
  for i = 1, #flat, 2 do
    local name, v = flat[i], flat[i + 1]
    local kind, kid = string.sub(name, 1, 2), string.sub(name, 3)
    if name == 'current' then
      k.current = v
    elseif kind == 's:' then
      k.secrets[kid] = v
    elseif kind == 'e:' then
      k.expires[kid] = v
    end
  end
  return k
end

-- As the SQL stores keep it: a row per kid with a secret.
local function keys_store(tag, k)
  local key = keys_key(tag)
  local flat = {}
  if k.current then flat = {'current', k.current} end
  for kid, secret in pairs(k.secrets) do
    flat[#flat + 1] = 's:' .. kid
    flat[#flat + 1] = secret
    if k.expires[kid] ~= nil then
      flat[#flat + 1] = 'e:' .. kid
      flat[#flat + 1] = to_text(k.expires[kid])
    end
  end
  redis.call('DEL', key)
  if #flat > 0 then redis.call('HSET', key, unpack(flat)) end
end

local function keys_answer(k)
  return {current = k.current or NULL, secrets = k.secrets, expires = k.expires}
end

-- Whether `text` is `lo` to `hi` characters of `class` (a Lua pattern set), as
-- re.fullmatch reads the Python pattern.
local function shaped(text, class, lo, hi)
  return #text >= lo and #text <= hi and not string.find(text, '[^' .. class .. ']')
end

-- tokens.parse: the kid of a '<kid>:<64 lowercase hex>' token, or nil.
local function token_kid(token)
  local at = string.find(token, ':', 1, true)
  if not at then return nil end
  local kid, digest = string.sub(token, 1, at - 1), string.sub(token, at + 1)
  if not shaped(kid, 'A-Za-z0-9._%-', 1, 64) or not shaped(digest, '0-9a-f', 64, 64) then
    return nil
  end
  return kid
end

local function same_bytes(a, b)
  if #a ~= #b then return false end
  local diff = 0
  for i = 1, #a do diff = bit.bor(diff, bit.bxor(string.byte(a, i), string.byte(b, i))) end
  return diff == 0
end

-- tokens.verify: the kid (current, or inside its grace), then the token against `minted`
-- (nil: the waitpoint is unknown or another execution's). nil, or the refusal.
local function verify(k, token, minted, now)
  if token == nil or token == '' then return fail_with('missing_token') end
  local kid = token_kid(token)
  if kid == nil then return fail_with('invalid_token') end
  if kid ~= k.current then
    if k.secrets[kid] == nil then return fail_with('unknown_kid', {kid = kid}) end
    local at = k.expires[kid]
    if at == nil or tonumber(at) < now then return fail_with('token_expired', {kid = kid}) end
  end
  if minted == nil or not same_bytes(token, minted) then return fail_with('invalid_token') end
  return nil
end

-- tokens.seed; `generated` stands in for a secret generated here.
local function seed(k, kid, secret, generated)
  if k.current == nil then
    k.current = kid
    k.secrets[kid] = (secret ~= nil and secret ~= '') and secret or generated
    k.expires[kid] = nil
    return 'installed'
  end
  if secret == nil then return 'kept' end
  if k.current == kid and (k.secrets[kid] == nil or k.secrets[kid] == secret) then
    k.secrets[kid] = secret
    return 'kept'
  end
  return 'differs'
end

-- tokens.rotate; `grace_end` (text) is now + the grace, computed by the caller.
local function rotate(k, kid, secret, grace_end, now)
  if k.current == kid or k.secrets[kid] ~= nil then
    local stored = k.secrets[kid]
    if stored ~= nil and stored ~= secret then
      return nil, fail_with('rotation_conflict', {kid = kid})
    end
    if k.current == kid then
      k.secrets[kid] = secret
      return {kind = 'noop', new_kid = kid, previous_kid = NULL, gc_count = 0}
    end
  end
  local gone = {}
  for old, at in pairs(k.expires) do
    if tonumber(at) < now and old ~= kid then gone[#gone + 1] = old end
  end
  for _, old in ipairs(gone) do k.secrets[old], k.expires[old] = nil, nil end
  local previous = k.current
  if previous ~= nil then k.expires[previous] = grace_end end
  k.current, k.secrets[kid], k.expires[kid] = kid, secret, nil
  return {kind = 'rotated', new_kid = kid, previous_kid = previous or NULL, gc_count = #gone}
end

-- KEYS[1] = ff:p:{fp:N}:wpkeys; a = {kid, secret?, generated, replica?}. With a replica (the
-- keystore of partition 0), an empty keystore becomes a copy of it. Answers {status, keys}.
SUSP.keys_seed = function(keys, argv)
  local a = args_of(argv)
  local tag = string.match(keys[1], '{fp:%d+}')
  local k = keys_load(tag)
  local status
  if a.replica and k.current == nil then
    k = {current = a.replica.current, secrets = a.replica.secrets,
         expires = a.replica.expires or {}}
    status = 'installed'
  else
    status = seed(k, a.kid, a.secret, a.generated)
  end
  if status == 'installed' or (status == 'kept' and a.secret ~= nil) then keys_store(tag, k) end
  return {ok = {status = status, keys = keys_answer(k)}}
end

-- KEYS[1] = ff:p:{fp:N}:wpkeys; a = {kid, secret, grace_end}: the rotation, or its refusal.
SUSP.keys_rotate = function(keys, argv)
  local a = args_of(argv)
  local tag = string.match(keys[1], '{fp:%d+}')
  local k = keys_load(tag)
  local rotation, e = rotate(k, a.kid, a.secret, a.grace_end, a.now)
  if e then return e end
  keys_store(tag, k)
  return {ok = rotation}
end

-- -- the rules (core.suspension) ---------------------------------------------------------------

local function ids_of(s)
  local ids = {}
  for i, w in ipairs(s.waitpoints) do ids[i] = w.waitpoint_id end
  return ids
end

-- _resume: the suspended attempt is claimable again (after `delay_ms`); the suspension and
-- its waitpoints close with `reason`.
local function resume_into(ex, s, c, reason, delay_ms, detail)
  close_s(s, reason, c.now)
  store_s(ex, s)
  runnable(ex, c, 'attempt_interrupted', delay_ms > 0 and c.now + delay_ms or nil,
           S.resume_delay, detail)
  close_waitpoints(ex.execution_id, ids_of(s), reason, c.now)
end

local function not_suspended(ex)
  return fail_with('execution_not_suspended', {execution_id = ex.execution_id,
                                               public_state = ex.public_state})
end

-- The operation resume: an operator resumes a suspended execution, whatever its condition.
RULES.resume = function(ex, c, a)
  local s = load_s(ex)
  if ex.lifecycle_phase ~= 'suspended' or not is_open(s) then return nil, not_suspended(ex) end
  local delay = a.resume_delay_ms or 0
  s.resume_trigger = a.trigger_type or NULL
  resume_into(ex, s, c, 'resumed', delay, 'resume delay ' .. to_text(delay) .. 'ms')
  return {Resumed = {public_state = ex.public_state}}
end

-- The operation expire_suspension (the suspension_timeout scanner): the timeout behavior.
RULES.expire_suspension = function(ex, c)
  local s = load_s(ex)
  if ex.lifecycle_phase ~= 'suspended' or not is_open(s) or ex.suspension_timeout_at == nil
      or ex.suspension_timeout_at > c.now then
    return nil
  end
  local behavior = field(s, 'timeout_behavior')
  if behavior == nil or behavior == '' then behavior = 'fail' end
  if behavior == 'escalate' then
    s.reason_code, s.timeout_at, s.timeout_behavior = 'waiting_for_operator_review', NULL, NULL
    store_s(ex, s)
    set_state(ex, c, 'suspended', 'unowned', 'not_applicable', S.paused_by_operator, 'none',
              ex.attempt_state, 'suspension escalated: timeout at ' ..
              to_text(ex.suspension_timeout_at))
    ex.suspension_timeout_at = nil
    return {SuspensionTimedOut = {behavior_applied = 'escalate'}}
  end
  if behavior == 'auto_resume_with_timeout_signal' then
    resume_into(ex, s, c, 'timed_out_auto_resume', 0, '')
    return {SuspensionTimedOut = {behavior_applied = 'auto_resume'}}
  end
  local reason = 'timed_out_' .. behavior
  close_s(s, reason, c.now)
  store_s(ex, s)
  local outcome = 'failed'
  if behavior == 'cancel' then outcome = 'cancelled' elseif behavior == 'expire' then
    outcome = 'expired'
  end
  close_waitpoints(ex.execution_id, ids_of(s), reason, c.now)
  attempt_update(ex.execution_id, ex.current_attempt_index, {
    attempt_state = behavior == 'cancel' and 'ended_cancelled' or 'ended_failure',
    ended_at = c.now, failure_reason = 'suspension_timeout:' .. behavior})
  ex.failure_reason = 'suspension_timeout:' .. behavior
  if outcome == 'cancelled' then
    ex.cancellation_reason, ex.cancelled_by = 'suspension_timeout', 'system_timeout_policy'
  end
  terminal(ex, c, outcome)
  return {SuspensionTimedOut = {behavior_applied = behavior}}
end

-- -- the worker's calls ------------------------------------------------------------------------
-- KEYS[1] is the execution's record key; a.fence the handle's fence. A refusal answers
-- {err, d}; a lease found expired is written first (as the SQL stores commit it).

-- The execution and what the call starts from, or nil and the refusal.
local function begin(keys, argv, missing)
  local a = args_of(argv)
  local eid = eid_of(keys[1])
  local ex = load(eid)
  if not ex then return nil, fail_with(missing, {execution_id = eid}) end
  return {a = a, c = ctx(a), eid = eid, tag = tag_of(eid), ex = ex, before = copy(ex),
          indexed = memberships(ex)}
end

-- Write the execution back; a flow member this ended (a lease found expired past the reclaim
-- cap) resolves its edges in the same call.
local function commit(call)
  save(call.ex, call.before)
  sync(call.ex, call.indexed)
  FLOW.note(call.ex, call.before.lifecycle_phase == 'terminal')
  FLOW.finish(call.c)
end

-- The lease check; a lease found expired is committed before its refusal is answered.
local function leased(call)
  local e = check_lease(call.ex, call.a.fence, call.c)
  if e and e.commit then commit(call) end
  return e
end

local function stale_kid(k) return fail_with('stale_kid', {current = k.current or NULL}) end

-- create_waitpoint: a pending waitpoint for the current attempt; the lease is kept.
SUSP.create_waitpoint = function(keys, argv)
  local call, refused = begin(keys, argv, 'invalid_handle')
  if refused then return refused end
  local a, ex, c = call.a, call.ex, call.c
  local e = leased(call)
  if e then return e end
  local k = keys_load(call.tag)
  if a.kid ~= k.current then return stale_kid(k) end
  for _, wp in ipairs(open_waitpoints(call.eid)) do
    if wp.waitpoint_key == a.waitpoint_key and wp.attempt_index == ex.current_attempt_index then
      return fail_with('waitpoint_already_exists', {execution_id = call.eid,
                                                    waitpoint_key = a.waitpoint_key,
                                                    waitpoint_id = wp.waitpoint_id})
    end
  end
  ex.waitpoints_open, ex.last_mutation_at = 1, c.now
  commit(call)
  local wp = {waitpoint_id = a.waitpoint_id, execution_id = call.eid,
              attempt_index = ex.current_attempt_index or 0, waitpoint_key = a.waitpoint_key,
              token = a.token, state = 'pending', created_at = c.now, expires_at = a.expires_at,
              signal_count = 0, matched_signal_count = 0}
  wp_save(call.tag, wp, nil)
  return {ok = wp}
end

-- replayed_suspend: the stored answer of a suspend retried with the same idempotency key.
local function replayed(ex, key)
  local s = load_s(ex)
  if key == nil or s == nil or field(s, 'idempotency_key') ~= key then return nil end
  local answer = s.answer
  local ids = {}
  if answer.kind == 'AlreadySatisfied' then ids = field(s, 'satisfiers') or {} end
  return {kind = answer.kind, suspension_id = s.suspension_id, waitpoints = answer.waitpoints,
          signal_ids = ids}
end

-- The waitpoints a suspend binds (a.keys in order), activated; nil and the refusal when one
-- cannot be bound. `befores[i]`: bound[i] as loaded (nil: made here).
local function bind(call, k)
  local a, ex, now = call.a, call.ex, call.c.now
  local by_key, fresh = {}, {}
  for _, wp in ipairs(open_waitpoints(call.eid)) do
    if wp.state == 'pending' and wp.attempt_index == ex.current_attempt_index then
      by_key[wp.waitpoint_key] = wp
    end
  end
  for _, f in ipairs(a.fresh or {}) do fresh[f[1]] = f end
  local bound, befores = {}, {}
  for i, key in ipairs(a.keys) do
    local wp = by_key[key]
    if wp then
      if wp.expires_at ~= nil and wp.expires_at <= now then
        return nil, nil, fail_with('pending_waitpoint_expired', {
          waitpoint_id = wp.waitpoint_id, waitpoint_key = key, expires_at = wp.expires_at})
      end
      befores[i] = copy(wp)
    else
      if a.kid ~= k.current then return nil, nil, stale_kid(k) end
      local f = fresh[key]
      wp = {waitpoint_id = f[2], execution_id = call.eid,
            attempt_index = ex.current_attempt_index or 0, waitpoint_key = key, token = f[3],
            state = 'pending', created_at = now, signal_count = 0, matched_signal_count = 0}
    end
    wp.state, wp.suspension_id, wp.activated_at = 'active', a.suspension_id, now
    wp.expires_at = a.timeout_at
    bound[i] = wp
  end
  return bound, befores
end

-- The signals the bound waitpoints buffered while pending, in the order they came.
local function buffered(call, bound, befores)
  local found = {}
  for i, wp in ipairs(bound) do
    if befores[i] then
      local flat = redis.call('ZRANGE', wp_key(call.tag, wp.waitpoint_id) .. ':sigs', 0, -1,
                              'WITHSCORES')
      for j = 1, #flat, 2 do
        found[#found + 1] = {sid = flat[j], seq = tonumber(flat[j + 1]), wid = wp.waitpoint_id}
      end
    end
  end
  table.sort(found, by_seq)
  return found
end

-- suspend: the lease holder suspends on a.condition; signals buffered before may already
-- satisfy it (the lease is then kept). Answers the result and the satisfying signals' rows.
SUSP.suspend = function(keys, argv)
  local call, refused = begin(keys, argv, 'invalid_handle')
  if refused then return refused end
  local a, ex, c, eid = call.a, call.ex, call.c, call.eid
  local again = replayed(ex, a.idempotency_key)
  if again then return {ok = again}, signal_rows(eid, again.signal_ids) end
  local e = leased(call)
  if e then return e end
  if is_open(load_s(ex)) then return fail_with('already_suspended', {execution_id = eid}) end
  local bound, befores, unbound = bind(call, keys_load(call.tag))
  if unbound then return unbound end
  local listed, refs, key_of = {}, {}, {}
  for i, wp in ipairs(bound) do
    listed[i] = {waitpoint_id = wp.waitpoint_id, waitpoint_key = wp.waitpoint_key,
                 token = wp.token}
    refs[i] = {waitpoint_id = wp.waitpoint_id, waitpoint_key = wp.waitpoint_key}
    key_of[wp.waitpoint_id] = wp.waitpoint_key
  end
  local s = {suspension_id = a.suspension_id, attempt_index = ex.current_attempt_index or NULL,
             waitpoints = refs, reason_code = a.reason_code or NULL,
             requested_by = a.requested_by or NULL, created_at = c.now,
             timeout_at = a.timeout_at or NULL, timeout_behavior = a.timeout_behavior or NULL,
             condition = a.condition, satisfied = {}, satisfiers = {}, closed_at = NULL,
             close_reason = NULL, closer_signal_id = NULL,
             idempotency_key = a.idempotency_key or NULL, answer = NULL}
  for _, b in ipairs(buffered(call, bound, befores)) do
    local got = redis.call('HMGET', sig_key(eid, b.sid), 'signal_name', 'source_type',
                           'source_identity')
    local effect, added = offer(a.condition, s.satisfied, key_of[b.wid], b.wid, b.sid, got[1],
                                got[2] .. ':' .. got[3])
    if #added > 0 then
      append(s.satisfied, added)
      s.satisfiers[#s.satisfiers + 1] = b.sid
    end
    if effect == S.satisfied then
      for _, wp in ipairs(bound) do
        wp.state, wp.closed_at, wp.close_reason = 'closed', c.now, 'resumed'
      end
      close_s(s, 'resumed', c.now)
      s.closer_signal_id = b.sid
      s.answer = {kind = 'AlreadySatisfied', waitpoints = listed}
      store_s(ex, s)
      ex.last_mutation_at = c.now
      commit(call)
      for i, wp in ipairs(bound) do wp_save(call.tag, wp, befores[i]) end
      return {ok = {kind = 'AlreadySatisfied', suspension_id = a.suspension_id,
                    waitpoints = listed, signal_ids = s.satisfiers}},
             signal_rows(eid, s.satisfiers)
    end
  end
  s.answer = {kind = 'Suspended', waitpoints = listed}
  store_s(ex, s)
  clear_lease(ex)
  set_state(ex, c, 'suspended', 'unowned', 'not_applicable',
            S.reasons[a.reason_code] or S.waiting_for_signal, 'none', 'attempt_interrupted',
            'suspended: waitpoint ' .. bound[1].waitpoint_id .. ' awaiting ' ..
            tostring(a.reason_code))
  ex.suspension_timeout_at = a.timeout_at
  ex.waitpoints_open = 1
  attempt_update(eid, ex.current_attempt_index, {attempt_state = 'suspended',
                                                 suspended_at = c.now,
                                                 suspension_id = a.suspension_id})
  commit(call)
  for i, wp in ipairs(bound) do wp_save(call.tag, wp, befores[i]) end
  return {ok = {kind = 'Suspended', suspension_id = a.suspension_id, waitpoints = listed}}
end

-- wait_children: release the lease until the execution's edge group is decided.
SUSP.wait_children = function(keys, argv)
  local call, refused = begin(keys, argv, 'invalid_handle')
  if refused then return refused end
  local ex, c, eid = call.ex, call.c, call.eid
  local pending, unresolved = false, 0
  if ex.flow_id ~= nil and ex.flow_id ~= '' then
    local F = flow_key(call.tag, ex.flow_id)
    local g = group_get(F, eid)
    unresolved = unresolved_into(F, eid)
    -- a group set before any edge applied waits for nothing
    pending = g ~= nil and g.state == 'pending' and unresolved > 0
  end
  local e = leased(call)
  if e then return e end
  if not pending then return {ok = {AlreadySatisfied = {reason = 'no_pending_dependencies'}}} end
  clear_lease(ex)
  set_state(ex, c, 'runnable', 'unowned', 'blocked_by_dependencies', S.waiting_for_children,
            'none', 'attempt_interrupted', 'waiting for child executions to complete')
  ex.suspension = nil
  attempt_update(eid, ex.current_attempt_index, {attempt_state = 'suspended',
                                                 suspended_at = c.now,
                                                 suspension_id = S.waiting_children})
  commit(call)
  return {ok = {WaitingChildren = {unresolved = unresolved}}}
end

-- -- signals -------------------------------------------------------------------------------------

local function not_signalable(ex)
  return fail_with('target_not_signalable', {execution_id = ex.execution_id,
                                             public_state = ex.public_state})
end

-- The earlier signal with this idempotency key on the waitpoint, still inside its window.
local function first_with_key(tag, wid, key, now)
  local held = redis.call('HGET', wp_key(tag, wid) .. ':idem', key)
  if not held then return nil end
  local expires, sid = string.match(held, '^(%d+):(.*)$')
  if tonumber(expires) > now then return sid end
  return nil
end

-- What a signal does to waitpoint `wp`: its effect and the tokens it adds, or nil and the
-- refusal (the checks of suspension.deliver after the token and the retry).
local function judge(call, wp, s)
  local a, ex = call.a, call.ex
  if ex.lifecycle_phase == 'terminal' then return nil, nil, not_signalable(ex) end
  if wp.state == 'closed' then
    return nil, nil, fail_with('waitpoint_closed', {waitpoint_id = wp.waitpoint_id,
                                                    close_reason = wp.close_reason or NULL})
  end
  local count, limit = ex.signal_count or 0, a.max_signals_per_execution
  if limit ~= nil and limit ~= 0 and count >= limit then
    return nil, nil, fail_with('signal_limit_exceeded', {execution_id = call.eid, count = count,
                                                         limit = limit})
  end
  if wp.state == 'pending' then return S.buffered, {} end
  if ex.lifecycle_phase == 'suspended' and is_open(s) and s.suspension_id == wp.suspension_id then
    return offer(s.condition, s.satisfied, wp.waitpoint_key, wp.waitpoint_id, a.signal_id,
                 a.signal_name, a.source_type .. ':' .. a.source_identity)
  end
  return nil, nil, not_signalable(ex)
end

local function store_signal(call, wp, effect)
  local a, ex, c, eid = call.a, call.ex, call.c, call.eid
  local keyed = a.idempotency_key ~= nil and a.idempotency_key ~= ''
  local sig = {signal_id = a.signal_id, execution_id = eid, waitpoint_id = wp.waitpoint_id,
               signal_name = a.signal_name, signal_category = a.signal_category,
               source_type = a.source_type, source_identity = a.source_identity,
               target_scope = a.target_scope, created_at = a.created_at or c.now,
               accepted_at = c.now, effect = effect, seq = ex.signal_count or 0,
               correlation_id = a.correlation_id, idempotency_key = a.idempotency_key,
               dedup_expires_at = keyed and c.now + a.dedup_ttl_ms or nil,
               payload_encoding = a.payload_encoding, payload = a.payload}
  redis.call('HSET', sig_key(eid, a.signal_id), unpack(flat_record(sig)))
  local w = wp_key(call.tag, wp.waitpoint_id)
  redis.call('ZADD', core_key(eid) .. ':sigs', sig.seq, a.signal_id)
  redis.call('ZADD', w .. ':sigs', sig.seq, a.signal_id)
  if sig.dedup_expires_at then
    redis.call('HSET', w .. ':idem', a.idempotency_key,
               to_text(sig.dedup_expires_at) .. ':' .. a.signal_id)
  end
end

-- deliver_signal: a = SignalArgs (payload in ARGV[2] when a.has_payload). Answers
-- {ok = {kind, signal_id, effect?}}; a resume names the execution's lane (l).
SUSP.deliver = function(keys, argv)
  local call, refused = begin(keys, argv, 'execution_not_found')
  if refused then return refused end
  local a, ex, c, eid, tag = call.a, call.ex, call.c, call.eid, call.tag
  if a.has_payload then a.payload = argv[2] or '' end
  local wp = wp_load(tag, a.waitpoint_id)
  if wp and wp.execution_id ~= eid then wp = nil end
  local first
  if a.idempotency_key ~= nil and wp then
    first = first_with_key(tag, wp.waitpoint_id, a.idempotency_key, c.now)
  end
  local e = verify(keys_load(tag), a.token, wp and wp.token, c.now)
  if e then return e end
  if a.lane_id ~= nil and a.lane_id ~= ex.lane_id then
    return fail_with('lane_mismatch', {execution_id = eid, lane_id = ex.lane_id,
                                       given = a.lane_id})
  end
  if first then return {ok = {kind = 'Duplicate', signal_id = first}} end
  local s = load_s(ex)
  local effect, added, refusal = judge(call, wp, s)
  if refusal then return refusal end
  if redis.call('EXISTS', sig_key(eid, a.signal_id)) == 1 then
    return fail_with('signal_id_in_use', {signal_id = a.signal_id, execution_id = eid})
  end
  store_signal(call, wp, effect)
  ex.signal_count = (ex.signal_count or 0) + 1
  ex.last_mutation_at = c.now
  local wp_before = copy(wp)
  wp.signal_count, wp.last_signal_at = wp.signal_count + 1, c.now
  if effect ~= S.not_in_condition and effect ~= S.matcher_failed and effect ~= S.buffered then
    wp.matched_signal_count = wp.matched_signal_count + 1
  end
  local resumed = s ~= nil and #added > 0 and effect == S.satisfied
  if resumed then wp.state, wp.closed_at, wp.close_reason = 'closed', c.now, 'resumed' end
  wp_save(tag, wp, wp_before)
  if s ~= nil and #added > 0 then
    append(s.satisfied, added)
    s.satisfiers[#s.satisfiers + 1] = a.signal_id
    if resumed then
      s.closer_signal_id = a.signal_id
      local delay = a.resume_delay_ms or 0
      resume_into(ex, s, c, 'resumed', delay, 'resume delay ' .. to_text(delay) ..
                  'ms after signal ' .. a.signal_name)
    end
    store_s(ex, s)
  end
  commit(call)
  local answer = {ok = {kind = 'Accepted', signal_id = a.signal_id, effect = effect}}
  if resumed then answer.l = ex.lane_id end
  return answer
end

-- -- the pending-waitpoint expiry scanner and reads ------------------------------------------------

-- KEYS[1] = ff:p:{fp:N}:all; a.ids: waitpoints its pending-expiry index showed due. Those still
-- pending and due close as never_committed; how many.
SUSP.expire_pending = function(keys, argv)
  local a = args_of(argv)
  local tag = string.match(keys[1], '{fp:%d+}')
  local closed = 0
  for _, wid in ipairs(a.ids) do
    local wp = wp_load(tag, wid)
    if wp and wp.state == 'pending' and wp.expires_at ~= nil and wp.expires_at <= a.now then
      local before = copy(wp)
      wp.state, wp.closed_at, wp.close_reason = 'closed', a.now, 'never_committed'
      wp_save(tag, wp, before)
      closed = closed + 1
    elseif not wp or wp.state ~= 'pending' or wp.expires_at == nil then
      redis.call('ZREM', pkey(tag) .. 'wp_pending', wid)
    end
  end
  return {ok = closed}
end

-- Read only: {the execution's flat record, each open waitpoint's flat record...} in waitpoint
-- id order, or nil.
SUSP.list = function(keys)
  local eid = eid_of(keys[1])
  local flat = redis.call('HGETALL', keys[1])
  if #flat == 0 then return nil end
  local tag, ids = tag_of(eid), redis.call('SMEMBERS', keys[1] .. ':wpopen')
  table.sort(ids)
  local out = {flat}
  for _, wid in ipairs(ids) do
    local wp = redis.call('HGETALL', wp_key(tag, wid))
    if #wp > 0 then out[#out + 1] = wp end
  end
  return out
end

-- Read only: the signals that resumed the current attempt (suspension.satisfiers), flat.
SUSP.resume_signals = function(keys)
  NULL = cjson.null
  local ex = load(eid_of(keys[1]))
  if not ex then return {} end
  local s = load_s(ex)
  if s == nil or field(s, 'close_reason') ~= 'resumed'
      or field(s, 'attempt_index') ~= ex.current_attempt_index then
    return {}
  end
  return signal_rows(ex.execution_id, field(s, 'satisfiers'))
end
end
define_suspension()
