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

-- A claim class: required capabilities, budget ids (a list), quota id ('' when none).
local function class_parts(cls)
  local caps, budgets, quota = string.match(cls, '^([^\n]*)\n([^\n]*)\n([^\n]*)$')
  if caps == nil then return cls, {}, '' end
  local list = {}
  for b in string.gmatch(budgets, '[^,]+') do list[#list + 1] = b end
  return caps, list, quota
end

-- admission.grant: reserve a claimable execution for the worker until now + ttl.
local function grant_one(ex, c, worker_id, ttl)
  ex.claimable = 0
  ex.grant_worker_id, ex.grant_expires_at = worker_id, c.now + ttl
  ex.last_mutation_at = c.now
end

-- The best executions the worker may take (priority DESC, created_at, id), up to a.max,
-- looking only at the heads of the claim classes it can run (capabilities) and that
-- admission lets through, so work it may not take never hides work it may. Each one leased
-- (or granted, with a.grant_ttl_ms) adds {attempt_type ('grant' for a grant), payload,
-- record} to `out`.
--
-- Budgets and quotas live in other slots: the caller passes what it knows of them, a.bud
-- (budget id -> 1 when it reached a hard limit, else 0) and a.qroom (quota id -> how many
-- executions of the quota this claim may still admit: a reservation it holds; a.qmore names
-- those it may reserve more of). A class with a budget or quota the caller gave no verdict
-- for (or whose room it used up, in a.qmore) is taken from only once it has one: when such a
-- class holds the best head, the call stops and extra.need names the budgets and the quotas
-- (with how many executions of each there are here, up to a.max) to decide.
-- extra.used names the executions admitted under each quota, extra.limited counts those of
-- classes with a budget or a quota.
local function lease_best(p, lane, a, c, out, extra)
  local caps = {}
  for cap in string.gmatch(a.capabilities, '[^,]+') do caps[cap] = true end
  local bud, qleft, more = a.bud or {}, {}, a.qmore or {}
  for q, n in pairs(a.qroom or {}) do qleft[q] = n end
  -- a class admission has yet to decide: a budget or quota without a verdict, or a quota
  -- whose room this claim used up and may reserve more of (a.qmore)
  local function undecided(set)
    local q = set.quota
    return set.unknown or (q ~= '' and qleft[q] <= 0 and more[q] ~= nil)
  end
  local sets = {}
  for _, cls in ipairs(redis.call('SMEMBERS', capsets_key(p, lane))) do
    local required, budgets, quota = class_parts(cls)
    if capability_match({required_capabilities = required}, caps) then
      local blocked, unknown = false, {}
      for _, b in ipairs(budgets) do
        if bud[b] == nil then unknown[#unknown + 1] = b elseif bud[b] == 1 then blocked = true end
      end
      if not blocked then
        sets[#sets + 1] = {key = claim_key(p, lane, cls), quota = quota, budgets = unknown,
                           unknown = #unknown > 0 or (quota ~= '' and qleft[quota] == nil),
                           limited = #budgets > 0 or quota ~= ''}
      end
    end
  end
  local leased, tries = 0, 0
  while leased < a.max and tries < a.window + a.max do
    tries = tries + 1
    local best_set, best
    for _, set in ipairs(sets) do
      if set.quota == '' or undecided(set) or qleft[set.quota] > 0 then
        local head = redis.call('ZRANGE', set.key, 0, 0)[1]
        if head and (best == nil or head < best) then best_set, best = set, head end
      end
    end
    if best == nil then return end
    if undecided(best_set) then  -- admission must decide first
      local budgets, quotas = {}, {}
      for _, set in ipairs(sets) do
        if undecided(set) then
          for _, b in ipairs(set.budgets) do budgets[b] = true end
          if set.quota ~= '' and (qleft[set.quota] == nil or qleft[set.quota] <= 0) then
            quotas[set.quota] = math.min((quotas[set.quota] or 0) +
                                         redis.call('ZCARD', set.key), a.max - leased)
          end
        end
      end
      local names = {}
      for b, _ in pairs(budgets) do names[#names + 1] = b end
      extra.need = {budgets = names, quotas = quotas}
      return
    end
    local best_key = best_set.key
    local eid = string.sub(best, 21)
    local ex = load(eid)
    if not ex then
      redis.call('ZREM', best_key, best)
    elseif ex.claimable ~= 1 or claim_member(ex) ~= best then
      redis.call('ZREM', best_key, best)
      sync(ex, memberships(ex), true)
    else
      local before, indexed = copy(ex), memberships(ex)
      local attempt_type
      if a.grant_ttl_ms then
        grant_one(ex, c, a.worker_id, a.grant_ttl_ms)
        attempt_type = 'grant'
      else
        local ca = copy(a)
        ca.lease_id, ca.attempt_id = a.lease_ids[leased + 1], a.attempt_ids[leased + 1]
        local _
        _, attempt_type = rule_claim(ex, c, ca)
      end
      save(ex, before)
      sync(ex, indexed)
      if not attempt_type then FLOW.note(ex, false) end  -- the reclaim cap ended it
      if attempt_type then
        leased = leased + 1
        if best_set.limited then extra.limited = (extra.limited or 0) + 1 end
        if best_set.quota ~= '' then
          qleft[best_set.quota] = qleft[best_set.quota] - 1
          local used = extra.used[best_set.quota] or {}
          used[#used + 1] = eid
          extra.used[best_set.quota] = used
        end
        out[#out + 1] = attempt_type
        out[#out + 1] = attempt_type == 'grant' and '' or
                        (redis.call('GET', core_key(eid) .. ':in') or '')
        out[#out + 1] = flat_record(ex)
      end
    end
  end
end

-- Promote the lane's due delays on this partition, then lease (or grant) the best
-- executions for the worker. Answers {next, promoted, resolved, extra, (attempt_type,
-- payload, record)...}, where next says when the lane's work left here is claimable (0: now,
-- -1: there is none), promoted how many delays came due (each made an execution claimable),
-- resolved the lanes (once per execution) that flow members the reclaim cap ended made
-- claimable, and extra is JSON: {used: {quota: [eids admitted]}, need: (see lease_best)}.
local function claim(keys, argv)
  local a = args_of(argv)
  local c = ctx(a)
  local p = pkey(string.match(keys[1], '{fp:%d+}'))
  promote_due(p, a.lane_id, a, c)
  local answer = {0, made_claimable, {}, ''}
  local extra = {used = {}}
  lease_best(p, a.lane_id, a, c, answer, extra)
  answer[4] = jenc(extra)
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
