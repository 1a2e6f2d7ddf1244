-- Part 3: the functions the appliance calls.
-- Calling convention: KEYS[1] is the execution's record key (ff:x:<eid>) or, for
-- partition-wide calls, ff:p:{fp:N}:all; ARGV[1] is a JSON object of arguments (absent = None);
-- ARGV[2] carries bytes (the input payload; for an operation, the args field named by
-- a._bytes). Operations answer JSON {"ok": outcome or null, "w": [lanes]} or
-- {"err": kind, "d": details, "w": [lanes]}, where w names the lanes the call made claimable,
-- or {"missing": true} when the execution does not exist.

local function eid_of(key) return string.sub(key, 6) end

local function ctx(a)
  return {now = a.now, retention_ms = a.retention_ms, u = a.u}
end

-- Load, apply one rule, write back what changed; an error answer writes nothing unless the
-- rule asked for its change to be committed first (a lease found expired is marked so).
-- A rule sets c.result to bytes to store as the result, or false to clear it, and c.delete
-- to remove the execution. A rule with nothing to do answers nil; the indexes are then
-- checked against the record (a scanner may have found a stale entry).
-- A flow member that ended (or came back from an end) is noted: its edges resolve at the end
-- of the call (FLOW.finish).
local function apply_rule(eid, ex, rule, a)
  local before, indexed = copy(ex), memberships(ex)
  local c = ctx(a)
  local outcome, e = rule(ex, c, a)
  if e and not e.commit then return e end
  if outcome == nil and e == nil then
    sync(ex, indexed, true)
    return {ok = NULL}
  end
  if c.delete then
    unindex(ex)
    FLOW.forget(ex)
    SUSP.forget(ex)
    redis.call('DEL', core_key(eid), core_key(eid) .. ':in', core_key(eid) .. ':out',
               core_key(eid) .. ':att')
    return {ok = outcome}
  end
  save(ex, before)
  sync(ex, indexed)
  FLOW.note(ex, before.lifecycle_phase == 'terminal')
  if c.result ~= nil then
    if c.result then
      redis.call('SET', core_key(eid) .. ':out', c.result)
    else
      redis.call('DEL', core_key(eid) .. ':out')
    end
  end
  if e then return e end
  return {ok = outcome}
end

-- The answer says the execution's lane (l): its claims should look at this partition again.
local function mutate(eid, rule, a)
  local ex = load(eid)
  if not ex then return {missing = true} end
  local answer = apply_rule(eid, ex, rule, a)
  answer.l = ex.lane_id
  return answer
end

local function create_one(a, payload)
  local row = a.row
  local eid = row.execution_id
  local tag = tag_of(eid)
  if row.flow_id then  -- its flow must be open: refused before anything is written
    local refused = FLOW.check_open(row)
    if refused then return refused end
  end
  if a.idempotency_key then
    local ns = row.namespace
    local ikey = 'ff:idem:' .. tag .. ':' .. #ns .. ':' .. ns .. ':' .. a.idempotency_key
    local held = redis.call('GET', ikey)
    if held then
      local expires, first = string.match(held, '^(%d+):(.*)$')
      if tonumber(expires) > a.now then return {ok = {Duplicate = {execution_id = first}}} end
    end
    redis.call('SET', ikey, to_text(a.now + a.idempotency_ttl_ms) .. ':' .. eid, 'PX',
               to_text(a.idempotency_ttl_ms + a.idempotency_grace_ms))
  end
  if redis.call('EXISTS', core_key(eid)) == 1 then
    return {ok = {Duplicate = {execution_id = eid}}}
  end
  local ex = copy(row)
  save(ex, {})
  redis.call('SET', core_key(eid) .. ':in', payload or '')
  redis.call('ZADD', pkey(tag) .. 'all', 0, eid)
  sync(ex, {})
  if row.flow_id then FLOW.join(ex, a.now) end  -- only when created: a duplicate joins once
  return {ok = {Created = {execution_id = eid, public_state = ex.public_state}}}
end

local function create(keys, argv)
  return create_one(args_of(argv), argv[2])
end

-- The lanes the last step made claimable (once per execution), kept to be published once at
-- the end of a call that takes several steps.
local function step_woken(published)
  for where, lane in pairs(woken) do published[where] = lane end
  local lanes = woken_lanes
  woken, woken_lanes = {}, {}
  return lanes
end

-- Several steps on one partition in one call (their keys share its hash tag): ARGV[1] is
-- {now, retention_ms, items}, ARGV[i + 1] the bytes of items[i]. Each step is atomic and
-- answered alone, as its own function would; one failing does not undo the others.
-- Answers {"a": [answer...]}, each answer with the lanes its step made claimable. The flow
-- members the steps ended resolve their edges after the last step (as ops.apply_many does);
-- the lanes that made claimable are the first answer's.
local function many(step)
  return function(keys, argv)
    local a = args_of(argv)
    local answers, published = {}, {}
    for i, item in ipairs(a.items) do
      item.now, item.retention_ms = item.now or a.now, a.retention_ms
      local answer = step(keys[i], item, argv[i + 1])
      answer.w = step_woken(published)
      answers[i] = answer
    end
    local back = FLOW.finish(ctx(a))
    local resolved = step_woken(published)
    if answers[1] and #resolved > 0 then
      for _, lane in ipairs(resolved) do answers[1].w[#answers[1].w + 1] = lane end
    end
    for i, answer in ipairs(answers) do FLOW.restate(eid_of(keys[i]), answer, back) end
    woken = published
    return {a = answers}
  end
end

local apply_many = many(function(key, item, bytes)
  local rule = RULES[item._op]
  if rule == nil then return {unsupported = true} end
  if item._bytes then item[item._bytes] = bytes end
  return mutate(eid_of(key), rule, item)
end)

local create_many = many(function(_, item, payload) return create_one(item, payload) end)

local function promote_due(p, lane, a, c)
  local due = redis.call('ZRANGEBYSCORE', p .. 'delayed:' .. lane, '-inf', a.now,
                         'LIMIT', 0, a.promote_limit)
  for _, eid in ipairs(due) do
    local ex = load(eid)
    if ex then
      local before, indexed = copy(ex), memberships(ex)
      if rule_promote_delayed(ex, c) then
        save(ex, before)
        sync(ex, indexed)
      else
        sync(ex, indexed, true)
      end
    else
      redis.call('ZREM', p .. 'delayed:' .. lane, eid)
      redis.call('ZREM', p .. 'delayed', eid)
    end
  end
end

-- The best executions the worker can run (priority DESC, created_at, id), up to a.max, looking
-- only at the heads of requirement sets the worker satisfies, so unrunnable work never hides
-- runnable work; each one leased adds {attempt_type, payload, record} to `out`.
local function lease_best(p, lane, a, c, out)
  local caps = {}
  for cap in string.gmatch(a.capabilities, '[^,]+') do caps[cap] = true end
  local runnable_sets = {}
  for _, set in ipairs(redis.call('SMEMBERS', capsets_key(p, lane))) do
    if capability_match({required_capabilities = set}, caps) then
      runnable_sets[#runnable_sets + 1] = claim_key(p, lane, set)
    end
  end
  local leased, tries = 0, 0
  while leased < a.max and tries < a.window + a.max do
    tries = tries + 1
    local best_key, best
    for _, key in ipairs(runnable_sets) do
      local head = redis.call('ZRANGE', key, 0, 0)[1]
      if head and (best == nil or head < best) then best_key, best = key, head end
    end
    if best == nil then return end
    local eid = string.sub(best, 21)
    local ex = load(eid)
    if not ex then
      redis.call('ZREM', best_key, best)
    elseif ex.claimable ~= 1 or claim_member(ex) ~= best then
      redis.call('ZREM', best_key, best)
      sync(ex, memberships(ex), true)
    else
      local before, indexed = copy(ex), memberships(ex)
      local ca = copy(a)
      ca.lease_id, ca.attempt_id = a.lease_ids[leased + 1], a.attempt_ids[leased + 1]
      local _, attempt_type = rule_claim(ex, c, ca)
      save(ex, before)
      sync(ex, indexed)
      if not attempt_type then FLOW.note(ex, false) end  -- the reclaim cap ended it
      if attempt_type then
        leased = leased + 1
        out[#out + 1] = attempt_type
        out[#out + 1] = redis.call('GET', core_key(eid) .. ':in') or ''
        out[#out + 1] = flat_record(ex)
      end
    end
  end
end

-- Promote the lane's due delays on this partition, then lease the best executions for the
-- worker. Answers {next, promoted, resolved, (attempt_type, payload, record)...}, where next
-- says when the lane's work left here is claimable (0: now, -1: there is none), promoted how
-- many delays came due (each made an execution claimable) and resolved the lanes (once per
-- execution) that flow members the reclaim cap ended made claimable.
local function claim(keys, argv)
  local a = args_of(argv)
  local c = ctx(a)
  local p = pkey(string.match(keys[1], '{fp:%d+}'))
  promote_due(p, a.lane_id, a, c)
  local answer = {0, made_claimable, {}}
  lease_best(p, a.lane_id, a, c, answer)
  local before = #woken_lanes
  FLOW.finish(c)
  for i = before + 1, #woken_lanes do answer[3][#answer[3] + 1] = woken_lanes[i] end
  answer[1] = tonumber(redis.call('ZSCORE', p .. 'lanes', a.lane_id)) or -1
  return answer
end

-- One operation of core.operations: the rule RULES[name] on the execution KEYS[1] names.
local function operation(rule)
  return function(keys, argv)
    local a = args_of(argv)
    if a._bytes then a[a._bytes] = argv[2] or '' end
    local eid = eid_of(keys[1])
    local answer = mutate(eid, rule, a)
    FLOW.restate(eid, answer, FLOW.finish(ctx(a)))
    return answer
  end
end

-- The record and its result in one consistent read: {flat record, result or nil} or nil.
local function read(keys)
  local flat = redis.call('HGETALL', keys[1])
  if #flat == 0 then return nil end
  return {flat, redis.call('GET', keys[1] .. ':out')}
end

-- A function answering a table: JSON, with the lanes it made claimable (published too).
local function register(name, fn)
  redis.register_function(name, function(keys, argv)
    fresh_call()
    local answer = fn(keys, argv)
    answer.w = publish_woken()
    return jenc(answer)
  end)
end

local function register_raw(name, fn)
  redis.register_function(name, function(keys, argv)
    fresh_call()
    local answer = fn(keys, argv)
    publish_woken()
    return answer
  end)
end

-- A function answering a table and rows beside it (binary-safe: signals with their payloads):
-- {JSON of the answer with the lanes it made claimable, row...}.
local function register_rows(name, fn)
  redis.register_function(name, function(keys, argv)
    fresh_call()
    local answer, rows = fn(keys, argv)
    answer.w = publish_woken()
    local out = {jenc(answer)}
    for _, row in ipairs(rows or {}) do out[#out + 1] = row end
    return out
  end)
end

local function register_read(name, fn)
  redis.register_function{function_name = name, callback = fn, flags = {'no-writes'}}
end
