-- Part 3b: flows (spec/flows.md), mirroring appliance/backend/sql/flows.py operation for
-- operation and core/flows.py rule for rule. Keys: see the header of 00_library.lua (every
-- key of a flow carries the hash tag {fp:N} of the flow's partition, as its members do).
-- FLOWS (constants) and FLOW_INT_FIELDS come from the generated prelude.
--
-- Edges and edge groups are JSON objects (absent = None). A member's edges are found through
-- its down/up hashes; the edges out of it still unsatisfied through its open set, in the
-- order the edges were made (seq), as the SQL stores find them through their index.

local FLOW_CANCEL = FLOWS.flow_cancel

local function flow_key(tag, flow_id) return 'ff:f:' .. tag .. ':' .. flow_id end

local function flow_load(F)
  local flat = redis.call('HGETALL', F)
  if #flat == 0 then return nil end
  local fl = {}
  for i = 1, #flat, 2 do
    local k, v = flat[i], flat[i + 1]
    if FLOW_INT_FIELDS[k] then v = tonumber(v) end
    fl[k] = v
  end
  return fl
end

local function flow_save(F, fl)
  redis.call('HSET', F, unpack(flat_record(fl)))
end

local function flow_index(tag, fl)
  local p = pkey(tag)
  redis.call('ZADD', p .. 'flows', 0, fl.flow_id)
  redis.call('ZADD', p .. 'flows:' .. lane_part(fl.namespace), 0, fl.flow_id)
end

-- _open_flow: the flow, or the refusal.
local function open_flow(F, flow_id)
  local fl = flow_load(F)
  if fl == nil then return nil, fail_with('flow_not_found', {flow_id = flow_id}) end
  if fl.state == 'cancelled' then
    return nil, fail_with('flow_already_terminal', {flow_id = flow_id, state = fl.state})
  end
  return fl
end

local function bump(F, fl, now, nodes, edges)
  fl.node_count = fl.node_count + nodes
  fl.edge_count = fl.edge_count + edges
  fl.graph_revision = fl.graph_revision + nodes + edges
  fl.last_mutation_at = now
  flow_save(F, fl)
end

-- -- edges and groups --------------------------------------------------------------------------

-- An edge or group as JSON: a flat object of strings and integers (jenc, unrolled: a cascade
-- writes one edge and one group per step).
local function jrec(t)
  local parts, n = {}, 0
  for k, v in pairs(t) do
    n = n + 1
    if is_int(v) then
      parts[n] = '"' .. k .. '":' .. string.format('%d', v)
    else
      parts[n] = '"' .. k .. '":' .. cjson.encode(v)
    end
  end
  return '{' .. table.concat(parts, ',') .. '}'
end

local function edge_get(F, edge_id)
  local raw = redis.call('HGET', F .. ':edges', edge_id)
  if not raw then return nil end
  return cjson.decode(raw)
end

-- Write the edge; `was` is its state before (nil: new), so the open set of its upstream and
-- the pending set of its downstream follow.
local function edge_put(F, tag, e, was)
  redis.call('HSET', F .. ':edges', e.edge_id, jrec(e))
  local up = e.upstream_execution_id
  if e.state == 'unsatisfied' and was ~= 'unsatisfied' then
    redis.call('ZADD', F .. ':open:' .. up, e.seq, e.edge_id)
    redis.call('SADD', F .. ':pending:' .. e.downstream_execution_id, e.edge_id)
    redis.call('SADD', pkey(tag) .. 'flow_open', up)
  elseif was == 'unsatisfied' and e.state ~= 'unsatisfied' then
    local key = F .. ':open:' .. up
    redis.call('ZREM', key, e.edge_id)
    redis.call('SREM', F .. ':pending:' .. e.downstream_execution_id, e.edge_id)
    if redis.call('ZCARD', key) == 0 then redis.call('SREM', pkey(tag) .. 'flow_open', up) end
  end
end

-- _unresolved: how many edges into `down` are unsatisfied.
local function unresolved_into(F, down)
  return redis.call('SCARD', F .. ':pending:' .. down)
end

local function edge_link(F, e)
  redis.call('HSET', F .. ':down:' .. e.upstream_execution_id, e.edge_id,
             e.downstream_execution_id)
  redis.call('HSET', F .. ':up:' .. e.downstream_execution_id, e.edge_id,
             e.upstream_execution_id)
end

local function by_seq(a, b) return a.seq < b.seq end

-- The edges into `down` (staged ones only if `staged`), in the order they were made.
local function inbound(F, down, staged)
  local edges = {}
  for _, id in ipairs(redis.call('HKEYS', F .. ':up:' .. down)) do
    local e = edge_get(F, id)
    if e and (staged or e.state ~= 'staged') then edges[#edges + 1] = e end
  end
  table.sort(edges, by_seq)
  return edges
end

local function unresolved_count(edges)
  local n = 0
  for _, e in ipairs(edges) do
    if e.state == 'unsatisfied' then n = n + 1 end
  end
  return n
end

local function group_get(F, down)
  local raw = redis.call('HGET', F .. ':groups', down)
  if not raw then return nil end
  return cjson.decode(raw)
end

local function group_put(F, g)
  redis.call('HSET', F .. ':groups', g.downstream_execution_id, jrec(g))
end

local function new_group(down, flow_id, policy, k, on_satisfied)
  return {downstream_execution_id = down, flow_id = flow_id, policy = policy, k = k,
          on_satisfied = on_satisfied, n = 0, succeeded = 0, failed = 0, skipped = 0,
          state = 'pending'}
end

-- -- the edge-group policy (core.flows) ------------------------------------------------------------

local function needed(g)
  if g.policy == 'any_of' then return 1 end
  if g.policy == 'quorum' then return math.max(g.k, 1) end
  return g.n
end

local function evaluate(g)
  local k = needed(g)
  if g.succeeded >= k then return 'satisfied' end
  if g.failed + g.skipped > g.n - k then return 'impossible' end
  return 'pending'
end

-- resolve_edge: the edge and the group's counters change; the group's new state when this
-- edge made it fire, else nil.
local function resolve_edge(e, g, outcome, now)
  local success = outcome == 'success'
  e.state = success and 'satisfied' or 'impossible'
  e.resolved_at = now
  if success then
    g.succeeded = g.succeeded + 1
  elseif outcome == 'skipped' then
    g.skipped = g.skipped + 1
  else
    g.failed = g.failed + 1
  end
  if g.state ~= 'pending' then return nil end
  local verdict = evaluate(g)
  if verdict == 'pending' then return nil end
  g.state = verdict
  if verdict == 'satisfied' then g.satisfied_at = now end
  return verdict
end

-- The counters from the group's applied edges, the group pending again (or still satisfied
-- if every edge it needs is).
local function recount(g, edges)
  g.succeeded, g.failed, g.skipped = 0, 0, 0
  g.n = #edges
  local satisfied_at = g.satisfied_at
  g.state, g.satisfied_at = 'pending', nil
  for _, e in ipairs(edges) do
    if e.state == 'satisfied' then g.succeeded = g.succeeded + 1 end
  end
  if evaluate(g) == 'satisfied' then g.state, g.satisfied_at = 'satisfied', satisfied_at end
end

-- -- member transitions (core.flows gate / release / skip) -------------------------------------

local function gate(ex, c, unresolved)
  if ex.lifecycle_phase ~= 'runnable' or ex.ownership_state ~= 'unowned' then return false end
  local attempt = ex.attempt_state
  if attempt == nil or attempt == '' then attempt = 'pending_first_attempt' end
  set_state(ex, c, 'runnable', 'unowned', 'blocked_by_dependencies', 'waiting_for_children',
            'none', attempt, to_text(unresolved) ..
            (unresolved == 1 and ' dependency' or ' dependencies') .. ' unresolved')
  return true
end

local function release(ex, c)
  if ex.lifecycle_phase ~= 'runnable' or ex.eligibility_state ~= 'blocked_by_dependencies' then
    return false
  end
  local attempt = ex.attempt_state
  if attempt == nil or attempt == '' or attempt == 'none' then
    attempt = 'pending_first_attempt'
  end
  set_state(ex, c, 'runnable', 'unowned', 'eligible_now', 'waiting_for_worker', 'none', attempt)
  return true
end

local function skip(ex, c)
  if ex.lifecycle_phase == 'terminal' then return false end
  if ex.attempt_state == 'running_attempt' or ex.attempt_state == 'attempt_interrupted' then
    attempt_update(ex.execution_id, ex.current_attempt_index, {
      attempt_state = 'ended_cancelled', ended_at = c.now,
      failure_reason = 'dependency_impossible'})
  end
  terminal(ex, c, 'skipped')
  if ex.total_attempt_count == 0 then ex.attempt_state = 'none' end
  ex.blocking_detail = 'a dependency can no longer be met'
  return true
end

-- Change `ex` by `change` (true if it changed) and write it back with its indexes.
local function transition(ex, change, ...)
  local before, indexed = copy(ex), memberships(ex)
  if not change(ex, ...) then return false end
  save(ex, before)
  sync(ex, indexed)
  return true
end

local function owes_cancel(policy, ex)
  if ex.lifecycle_phase == 'terminal' or policy == 'let_run' then return false end
  if policy == 'cancel_pending' then return ex.lifecycle_phase == 'runnable' end
  return true
end

-- An operator cancel (rules.cancel with CancelArgs(reason=reason)); nil, or its refusal.
local function operator_cancel(ex, c, reason)
  local before, indexed = copy(ex), memberships(ex)
  local _, e = rule_cancel(ex, c, {reason = reason, source = OPERATOR})
  if e then return e end
  return nil, before, indexed
end

-- -- resolution -----------------------------------------------------------------------------------
-- A work item is {up = the upstream's record, edges = its edges to resolve, or nil: its
-- unsatisfied outgoing edges, read when the item's turn comes}.

local function cancel_siblings(F, down, reason, work, c)
  local ids, seen = {}, {}
  for _, e in ipairs(inbound(F, down, false)) do
    local up = e.upstream_execution_id
    if not seen[up] then
      seen[up] = true
      ids[#ids + 1] = up
    end
  end
  table.sort(ids)
  for _, eid in ipairs(ids) do
    local sibling = load(eid)
    if sibling and sibling.lifecycle_phase ~= 'terminal' then
      local _, before, indexed = operator_cancel(sibling, c, reason)
      if before then
        save(sibling, before)
        sync(sibling, indexed)
        work[#work + 1] = {up = sibling}
      end
    end
  end
end

local function resolve_one(tag, up, e, work, c)
  local F = flow_key(tag, e.flow_id)
  local g = group_get(F, e.downstream_execution_id)
  if g == nil then return end  -- applied edges always have one; a hand-edited store may not
  local was_pending, was = g.state == 'pending', e.state
  local verdict = resolve_edge(e, g, up.terminal_outcome, c.now)
  edge_put(F, tag, e, was)
  group_put(F, g)
  local down = e.downstream_execution_id
  -- Only its phase unless the group fired (most resolutions of a large fan-in only count).
  local phase = redis.call('HGET', core_key(down), 'lifecycle_phase')
  if not phase then return end
  if was_pending and e.state == 'satisfied' and e.data_passing_ref ~= nil
      and e.data_passing_ref ~= '' and up.has_result == 1 and phase ~= 'terminal' then
    local data = redis.call('GET', core_key(up.execution_id) .. ':out')
    redis.call('SET', core_key(down) .. ':in', data or '')
  end
  if verdict == nil then return end
  local child = load(down)
  if verdict == 'satisfied' then
    transition(child, release, c)
  elseif transition(child, skip, c) then
    work[#work + 1] = {up = child}
  end
  if g.on_satisfied == 'cancel_remaining' then
    cancel_siblings(F, child.execution_id,
                    verdict == 'satisfied' and FLOWS.sibling_satisfied or FLOWS.sibling_impossible,
                    work, c)
  end
end

local function resolve_work(work, c)
  local steps, head = 0, 1
  while head <= #work and steps < FLOWS.resolve_max_steps do
    local item = work[head]
    head = head + 1
    local up = item.up
    local tag = tag_of(up.execution_id)
    local edges = item.edges
    if edges == nil then
      edges = {}
      local F = flow_key(tag, up.flow_id)
      for _, id in ipairs(redis.call('ZRANGE', F .. ':open:' .. up.execution_id, 0, -1)) do
        local e = edge_get(F, id)
        if e and e.state == 'unsatisfied' then edges[#edges + 1] = e end
      end
    end
    for _, e in ipairs(edges) do
      steps = steps + 1
      resolve_one(tag, up, e, work, c)
    end
  end
end

-- A replayed member with inbound edges: its impossible edges are unsatisfied again, its group
-- recounted and pending, the member held; edges whose upstream has ended resolve again.
local function regate(ex, c)
  local tag = tag_of(ex.execution_id)
  local F = flow_key(tag, ex.flow_id)
  local g = group_get(F, ex.execution_id)
  if g == nil or g.n == 0 then return end
  local edges = inbound(F, ex.execution_id, false)
  for _, e in ipairs(edges) do
    if e.state == 'impossible' then
      e.state, e.resolved_at = 'unsatisfied', nil
      edge_put(F, tag, e, 'impossible')
    end
  end
  recount(g, edges)
  group_put(F, g)
  if evaluate(g) == 'satisfied' then return end
  if not transition(ex, gate, c, unresolved_count(edges)) then return end
  local work = {}
  for _, e in ipairs(edges) do
    if e.state == 'unsatisfied' then
      local up = load(e.upstream_execution_id)
      if up and up.lifecycle_phase == 'terminal' then work[#work + 1] = {up = up, edges = {e}} end
    end
  end
  resolve_work(work, c)
end

-- -- hooks of the execution functions (20_functions.lua) ----------------------------------------

-- FlowMoves.note: a member that ended (unless a flow cancel ended it) or came back.
FLOW.note = function(ex, was_terminal)
  if ex.flow_id == nil or ex.flow_id == '' then return end
  local now_terminal = ex.lifecycle_phase == 'terminal'
  if now_terminal and not was_terminal and ex.cancelled_by ~= FLOW_CANCEL then
    moves.ended[#moves.ended + 1] = ex
  elseif was_terminal and not now_terminal then
    moves.back[#moves.back + 1] = ex
  end
end

-- flows.resolve, once the call's own writes are done: each member as it is now. Answers the
-- members brought back (by id), for FLOW.restate.
FLOW.finish = function(c)
  local moved, back = moves, {}
  moves = {ended = {}, back = {}}
  for _, ex in ipairs(moved.back) do
    back[ex.execution_id] = true
    regate(load(ex.execution_id) or ex, c)
  end
  if #moved.ended > 0 then
    local work = {}
    for _, ex in ipairs(moved.ended) do work[#work + 1] = {up = load(ex.execution_id) or ex} end
    resolve_work(work, c)
  end
  return back
end

-- FlowMoves.restate: a replay of a member answers the state its flow left it in (held
-- again, or skipped again).
FLOW.restate = function(eid, answer, back)
  if back[eid] and type(answer.ok) == 'table' and answer.ok.Replayed then
    local state = redis.call('HGET', core_key(eid), 'public_state')
    if state then answer.ok.Replayed.public_state = state end
  end
end

-- A create with flow_id: the flow must be open (nil, or the refusal).
FLOW.check_open = function(row)
  local _, refused = open_flow(flow_key(tag_of(row.execution_id), row.flow_id), row.flow_id)
  return refused
end

local function add_to_members(F, ex)
  redis.call('ZADD', F .. ':members', 0, ex.execution_id)
end

-- join_on_create: the execution just created joins its (open) flow.
FLOW.join = function(ex, now)
  local F = flow_key(tag_of(ex.execution_id), ex.flow_id)
  add_to_members(F, ex)
  bump(F, flow_load(F), now, 1, 0)
end

-- A purged member leaves its flow (its edges stay, as SQL rows do).
FLOW.forget = function(ex)
  if ex.flow_id == nil or ex.flow_id == '' then return end
  local tag = tag_of(ex.execution_id)
  redis.call('ZREM', flow_key(tag, ex.flow_id) .. ':members', ex.execution_id)
  redis.call('SREM', pkey(tag) .. 'flow_open', ex.execution_id)
end

-- -- the flow functions ---------------------------------------------------------------------------
-- KEYS[1] is the flow's key (ff:f:{fp:N}:<flow_id>) unless said otherwise; ARGV[1] the JSON
-- arguments (now and retention_ms among them). A refusal core words from its details is
-- {err, d}; one worded here, an InvalidInput, is {invalid = message}.

local function flow_tag(key) return string.match(key, '{fp:%d+}') end

-- create_flow: a = {flow = record, nodes = [[key, record]...] (already gated), edges =
-- [[upstream node, downstream node (places in nodes), edge id, dependency_kind,
-- data_passing_ref or absent]...], groups = [group records]}; ARGV[i + 1] is node i's input.
-- All or nothing: refused before anything is written.
local function flow_create(keys, argv)
  local a = args_of(argv)
  local F, tag = keys[1], flow_tag(keys[1])
  local existing = flow_load(F)
  if existing then
    if a.nodes == nil then return {ok = {AlreadySatisfied = {flow_id = existing.flow_id}}} end
    local executions = {}
    local flat = redis.call('HGETALL', F .. ':nodes')
    for i = 1, #flat, 2 do executions[flat[i]] = flat[i + 1] end
    return {ok = {AlreadySatisfied = {flow_id = existing.flow_id, executions = executions,
                                      graph_revision = existing.graph_revision}}}
  end
  local nodes = a.nodes or {}
  local seen = {}
  for _, item in ipairs(nodes) do
    local eid = item[2].execution_id
    if seen[eid] or redis.call('EXISTS', core_key(eid)) == 1 then
      return {invalid = 'nodes: execution ' .. eid .. ' already exists; leave execution_id ' ..
                        'out to have one minted'}
    end
    seen[eid] = true
  end
  flow_save(F, a.flow)
  flow_index(tag, a.flow)
  if a.nodes == nil then return {ok = {Created = {flow_id = a.flow.flow_id}}} end
  local p = pkey(tag)
  for i, item in ipairs(nodes) do
    local key, ex = item[1], item[2]
    local eid = ex.execution_id
    save(ex, {})
    redis.call('SET', core_key(eid) .. ':in', argv[i + 1] or '')
    redis.call('ZADD', p .. 'all', 0, eid)
    redis.call('ZADD', F .. ':members', 0, eid)
    redis.call('HSET', F .. ':nodes', key, eid)
    sync(ex, {})
  end
  local flow_id = a.flow.flow_id
  for seq, item in ipairs(a.edges or {}) do
    local e = {edge_id = item[3], flow_id = flow_id,
               upstream_execution_id = nodes[item[1]][2].execution_id,
               downstream_execution_id = nodes[item[2]][2].execution_id,
               dependency_kind = item[4], data_passing_ref = item[5], state = 'unsatisfied',
               created_at = a.now, applied_at = a.now, seq = seq - 1}
    edge_put(F, tag, e, nil)
    edge_link(F, e)
  end
  for _, g in ipairs(a.groups or {}) do group_put(F, g) end
  return {ok = {Created = {flow_id = a.flow.flow_id}}}
end

-- add_member: KEYS = {flow, the execution's record}.
local function flow_add_member(keys, argv)
  local a = args_of(argv)
  local F = keys[1]
  local fl, refused = open_flow(F, a.flow_id)
  if refused then return refused end
  local eid = a.execution_id
  local ex = load(eid)
  if ex == nil then return fail_with('execution_not_found', {execution_id = eid}) end
  if ex.partition_id ~= fl.partition_id then
    return {invalid = 'execution_id: ' .. eid .. ' is on partition ' .. to_text(ex.partition_id)
                      .. ', flow ' .. a.flow_id .. ' on ' .. to_text(fl.partition_id) ..
                      '; a member must be created on its flow\'s partition (create it with ' ..
                      'flow_id)'}
  end
  if ex.flow_id == a.flow_id then
    return {ok = {AlreadyMember = {execution_id = eid, node_count = fl.node_count}}}
  end
  if ex.flow_id ~= nil and ex.flow_id ~= '' then
    return fail_with('execution_in_other_flow', {execution_id = eid,
                                                 other_flow_id = ex.flow_id})
  end
  local before = copy(ex)
  ex.flow_id, ex.last_mutation_at = a.flow_id, a.now
  save(ex, before)
  add_to_members(F, ex)
  bump(F, fl, a.now, 1, 0)
  return {ok = {Added = {execution_id = eid, new_node_count = fl.node_count}}}
end

-- Whether `target` is reachable from `start` along the flow's edges (any state).
local function reaches(F, start, target)
  local seen, todo = {[start] = true}, {start}
  while #todo > 0 do
    local node = table.remove(todo)
    if node == target then return true end
    for _, nxt in ipairs(redis.call('HVALS', F .. ':down:' .. node)) do
      if not seen[nxt] then
        seen[nxt] = true
        todo[#todo + 1] = nxt
      end
    end
  end
  return false
end

local function flow_stage(keys, argv)
  local a = args_of(argv)
  local F, tag = keys[1], flow_tag(keys[1])
  local up, down = a.upstream_execution_id, a.downstream_execution_id
  if up == down then return fail_with('self_referencing_edge', {execution_id = up}) end
  local fl, refused = open_flow(F, a.flow_id)
  if refused then return refused end
  if fl.graph_revision ~= a.expected_graph_revision then
    return fail_with('stale_graph_revision', {flow_id = a.flow_id,
                                              graph_revision = fl.graph_revision,
                                              expected = a.expected_graph_revision})
  end
  for _, eid in ipairs({up, down}) do
    if redis.call('HGET', core_key(eid), 'flow_id') ~= a.flow_id then
      return fail_with('execution_not_in_flow', {execution_id = eid, flow_id = a.flow_id})
    end
  end
  if redis.call('HEXISTS', F .. ':edges', a.edge_id) == 1 then
    return fail_with('dependency_already_exists', {edge_id = a.edge_id, flow_id = a.flow_id})
  end
  if reaches(F, down, up) then
    return fail_with('cycle_detected', {upstream = up, downstream = down, flow_id = a.flow_id})
  end
  local e = {edge_id = a.edge_id, flow_id = a.flow_id, upstream_execution_id = up,
             downstream_execution_id = down, dependency_kind = a.dependency_kind,
             data_passing_ref = a.data_passing_ref, state = 'staged', created_at = a.now,
             seq = fl.edge_count}
  edge_put(F, tag, e, nil)
  edge_link(F, e)
  bump(F, fl, a.now, 0, 1)
  return {ok = {Staged = {edge_id = a.edge_id, new_graph_revision = fl.graph_revision}}}
end

local function flow_apply(keys, argv)
  local a = args_of(argv)
  local F, tag = keys[1], flow_tag(keys[1])
  local c = ctx(a)
  local fl = flow_load(F)
  if fl == nil then return fail_with('flow_not_found', {flow_id = a.flow_id}) end
  local e = edge_get(F, a.edge_id)
  if e == nil or e.upstream_execution_id ~= a.upstream_execution_id
      or e.downstream_execution_id ~= a.downstream_execution_id then
    return fail_with('edge_not_found', {edge_id = a.edge_id, flow_id = a.flow_id})
  end
  -- core.flows.check_apply words these refusals (from the records sent back).
  if (a.graph_revision ~= nil and a.graph_revision > fl.graph_revision)
      or (a.dependency_kind ~= nil and a.dependency_kind ~= e.dependency_kind)
      or (a.data_passing_ref ~= nil and a.data_passing_ref ~= e.data_passing_ref) then
    return {check_apply = {flow = fl, edge = e}}
  end
  if e.state ~= 'staged' then return {ok = 'AlreadyApplied'} end
  if fl.state == 'cancelled' then
    return fail_with('flow_already_terminal', {flow_id = a.flow_id, state = fl.state})
  end
  local child = load(e.downstream_execution_id)
  if child == nil then
    return fail_with('execution_not_found', {execution_id = e.downstream_execution_id})
  end
  -- core.flows.check_not_delayed words this refusal (from the record sent back).
  if child.eligibility_state == 'not_eligible_until_time' then
    return {check_not_delayed = flat_record(child)}
  end
  local g = group_get(F, child.execution_id)
  if g == nil then g = new_group(child.execution_id, a.flow_id, 'all_of', 0, 'let_run') end
  g.n = g.n + 1
  e.state, e.applied_at = 'unsatisfied', a.now
  edge_put(F, tag, e, 'staged')
  group_put(F, g)
  local unresolved = unresolved_into(F, child.execution_id)
  if g.state == 'pending' then transition(child, gate, c, unresolved) end
  local up = load(e.upstream_execution_id)
  if up and up.lifecycle_phase == 'terminal' then
    resolve_work({{up = up, edges = {e}}}, c)
    unresolved = unresolved_into(F, child.execution_id)
  end
  return {ok = {Applied = {unsatisfied_count = unresolved}}}
end

local function flow_set_group(keys, argv)
  local a = args_of(argv)
  local F = keys[1]
  if flow_load(F) == nil then return fail_with('flow_not_found', {flow_id = a.flow_id}) end
  local down = a.downstream_execution_id
  if redis.call('HGET', core_key(down), 'flow_id') ~= a.flow_id then
    return fail_with('execution_not_in_flow', {execution_id = down, flow_id = a.flow_id})
  end
  local g = group_get(F, down)
  if g and g.n > 0 then return fail_with('edge_group_policy_fixed', {execution_id = down}) end
  if g and g.policy == a.policy and g.k == a.k and g.on_satisfied == a.on_satisfied then
    return {ok = 'AlreadySet'}
  end
  group_put(F, new_group(down, a.flow_id, a.policy, a.k, a.on_satisfied))
  return {ok = {Set = {downstream_execution_id = down}}}
end

-- cancel_flow: flag the flow cancelled and write the cancels it owes to the backlog.
local function flow_cancel(keys, argv)
  local a = args_of(argv)
  local F, tag = keys[1], flow_tag(keys[1])
  local fl = flow_load(F)
  if fl == nil then return fail_with('flow_not_found', {flow_id = a.flow_id}) end
  local members = redis.call('ZRANGE', F .. ':members', 0, -1)
  if fl.state == 'cancelled' then
    local shown = {}
    for i = 1, math.min(#members, FLOWS.cancel_answer_max) do shown[i] = members[i] end
    return {ok = {policy = fl.cancellation_policy or a.policy, members = shown, owed = {},
                  already = true}}
  end
  fl.state, fl.cancelled_at = 'cancelled', a.now
  fl.cancel_reason, fl.cancellation_policy = a.reason, a.policy
  fl.last_mutation_at = a.now
  flow_save(F, fl)
  local owed = {}
  local backlog = pkey(tag) .. 'flow_cancel'
  for _, eid in ipairs(members) do
    local phase = redis.call('HGET', core_key(eid), 'lifecycle_phase')
    if phase and owes_cancel(a.policy, {lifecycle_phase = phase}) then
      owed[#owed + 1] = eid
      redis.call('ZADD', backlog, a.now + FLOWS.cancel_grace_ms, a.flow_id .. '|' .. eid)
    end
  end
  return {ok = {policy = a.policy, members = members, owed = owed, already = false}}
end

-- cancel_members: each owed cancel with its backlog entry; the ids whose cancel failed.
local function flow_cancel_members(keys, argv)
  local a = args_of(argv)
  local tag = flow_tag(keys[1])
  local c = ctx(a)
  local backlog = pkey(tag) .. 'flow_cancel'
  local ids = a.ids
  table.sort(ids)
  local failed = {}
  for _, eid in ipairs(ids) do
    local ex = load(eid)
    local done = true
    if ex and ex.lifecycle_phase ~= 'terminal' then
      local refused, before, indexed = operator_cancel(ex, c, a.reason)
      if refused then
        failed[#failed + 1] = eid
        done = false
      else
        ex.cancelled_by = FLOW_CANCEL  -- its end resolves nothing (spec/flows.md)
        save(ex, before)
        sync(ex, indexed)
      end
    end
    if done then redis.call('ZREM', backlog, a.flow_id .. '|' .. eid) end
  end
  return {ok = failed}
end

-- reconcile_dependencies on one partition (KEYS[1] = ff:p:{fp:N}:all): applied edges still
-- unresolved whose upstream has ended, up to a.limit; how many.
local function flow_reconcile(keys, argv)
  local a = args_of(argv)
  local tag = flow_tag(keys[1])
  local c = ctx(a)
  local open = pkey(tag) .. 'flow_open'
  local ups = redis.call('SMEMBERS', open)
  table.sort(ups)
  local work, found = {}, 0
  for _, eid in ipairs(ups) do
    if found >= a.limit then break end
    local phase = redis.call('HGET', core_key(eid), 'lifecycle_phase')
    local up = phase == 'terminal' and load(eid) or nil
    if not phase or (up and not up.flow_id) then
      redis.call('SREM', open, eid)  -- purged, or not a member: nothing to find through it
    elseif up then
      local F = flow_key(tag, up.flow_id)
      local edges = {}
      for _, id in ipairs(redis.call('ZRANGE', F .. ':open:' .. eid, 0, a.limit - found - 1)) do
        local e = edge_get(F, id)
        if e and e.state == 'unsatisfied' then edges[#edges + 1] = e end
      end
      found = found + #edges
      work[#work + 1] = {up = up, edges = edges}
    end
  end
  resolve_work(work, c)
  return {ok = found}
end

-- describe (read only): {JSON of {flow, members: [[execution_id, public_state, node key]...]
-- in id order}, [edge JSON...], [group JSON...]}, or nil.
local function flow_describe(keys)
  NULL = cjson.null
  local F = keys[1]
  local fl = flow_load(F)
  if fl == nil then return nil end
  local key_of = {}
  local flat = redis.call('HGETALL', F .. ':nodes')
  for i = 1, #flat, 2 do key_of[flat[i + 1]] = flat[i] end
  local members = {}
  for _, eid in ipairs(redis.call('ZRANGE', F .. ':members', 0, -1)) do
    local state = redis.call('HGET', core_key(eid), 'public_state')
    if state then members[#members + 1] = {eid, state, key_of[eid] or NULL} end
  end
  return {jenc({flow = fl, members = members}), redis.call('HVALS', F .. ':edges'),
          redis.call('HVALS', F .. ':groups')}
end
