-- Part 2: the state-transition rules, mirroring appliance/core/transitions.py.
-- A rule mutates the loaded record `ex` and returns (outcome) or (nil, error[, commit]);
-- `c` carries now, retention_ms and the random draw `u` for jitter.

local OPERATOR = 'operator_override'
local U32_MAX = LIMITS.u32_max
-- The rule of each operation, by the name core.operations registers it under; 90_register
-- registers a function for each name in OPERATIONS.
local RULES = {}

-- A stored number read as policy.load_policy reads it: clamped into lo..hi, and the
-- default when it is not a finite number (policies stored by older versions).
local function bounded(v, default, lo, hi)
  if type(v) ~= 'number' or v ~= v or v == math.huge or v == -math.huge then return default end
  return math.max(lo, math.min(hi, v))
end

local DURATION_MAX_MS = LIMITS.duration_max_ms

-- An integer policy field, as the Python decoder reads it (floored, clamped, defaulted).
local function policy_int(tbl, name, default, lo, hi)
  local v = bounded(field(tbl, name), nil, lo, hi)
  if v == nil then return default end
  return math.floor(v)
end
local PRIORITY_MIN, PRIORITY_MAX = LIMITS.priority_min, LIMITS.priority_max

local function derive_public_state(phase, eligibility, outcome)
  if phase == 'terminal' then return TERMINAL_PUBLIC[outcome] or 'failed' end
  if phase == 'suspended' then return 'suspended' end
  if phase == 'active' then return 'active' end
  if phase == 'runnable' then return RUNNABLE_PUBLIC[eligibility] or 'waiting' end
  return 'waiting'
end

local function is_claimable(phase, ownership, eligibility)
  if phase == 'runnable' then return eligibility == 'eligible_now' end
  return phase == 'active' and RECLAIMABLE[ownership] == true
end

local function set_state(ex, c, phase, ownership, eligibility, blocking, outcome, attempt_state,
                         detail)
  if phase ~= 'suspended' then  -- leaving a suspension another way closes it
    ex.suspension_timeout_at = nil
    if ex.lifecycle_phase == 'suspended' and ex.suspension then
      SUSP.close_json(ex, phase == 'terminal' and outcome or 'resumed', c.now)
    end
  end
  ex.lifecycle_phase, ex.ownership_state, ex.eligibility_state = phase, ownership, eligibility
  ex.blocking_reason, ex.terminal_outcome, ex.attempt_state = blocking, outcome, attempt_state
  ex.blocking_detail = detail or ''
  ex.public_state = derive_public_state(phase, eligibility, outcome)
  ex.claimable = is_claimable(phase, ownership, eligibility) and 1 or 0
  ex.grant_worker_id, ex.grant_expires_at = nil, nil  -- a state change voids a claim grant
  ex.last_transition_at, ex.last_mutation_at = c.now, c.now
  if eligibility ~= 'not_eligible_until_time' then ex.delay_until = nil end
  if phase ~= 'active' then ex.attempt_deadline_at = nil end
  if phase == 'terminal' then
    ex.execution_deadline_at = nil
    ex.completed_at = c.now
    local retention = policy_int(field(policy_of(ex), 'stream_policy'), 'retention_ttl_ms', nil,
                                 1, DURATION_MAX_MS)
    ex.purge_at = c.now + (retention or c.retention_ms)
  else
    ex.purge_at = nil
  end
end

local function clear_lease(ex)
  ex.current_lease_id, ex.current_worker_id, ex.current_worker_instance_id = nil, nil, nil
  ex.lease_acquired_at, ex.lease_expires_at, ex.lease_last_renewed_at = nil, nil, nil
  ex.lease_renewal_deadline, ex.lease_ttl_ms = nil, nil
  ex.lease_expired_at, ex.lease_revoked_at, ex.lease_revoke_reason = nil, nil, nil
end

local function runnable(ex, c, attempt_state, delay_until, blocking_when_delayed, detail)
  clear_lease(ex)
  if delay_until ~= nil and delay_until > c.now then
    if detail == nil or detail == '' then detail = 'delayed until ' .. to_text(delay_until) end
    set_state(ex, c, 'runnable', 'unowned', 'not_eligible_until_time', blocking_when_delayed,
              'none', attempt_state, detail)
    ex.delay_until = delay_until
  else
    set_state(ex, c, 'runnable', 'unowned', 'eligible_now', 'waiting_for_worker', 'none',
              attempt_state)
  end
end

local function terminal(ex, c, outcome)
  local ran = ex.total_attempt_count > 0
  clear_lease(ex)
  set_state(ex, c, 'terminal', 'unowned', 'not_applicable', 'none', outcome,
            ran and 'attempt_terminal' or ex.attempt_state)
end

local function clamp_priority(p)
  return math.max(PRIORITY_MIN, math.min(PRIORITY_MAX, p))
end

local function summary(ex, variant)
  return {[variant] = {execution_id = ex.execution_id, public_state = ex.public_state}}
end

local function not_active(ex)
  return fail_with('execution_not_active', {
    execution_id = ex.execution_id, lifecycle_phase = ex.lifecycle_phase, terminal_outcome = ex.terminal_outcome,
    lease_epoch = ex.current_lease_epoch, attempt_id = ex.current_attempt_id or NULL})
end

-- -- policy ------------------------------------------------------------------------------------

local function max_reclaim_count(ex)
  return policy_int(policy_of(ex), 'max_reclaim_count', DEFAULTS.max_reclaim_count, 0, U32_MAX)
end

local function retry_allows(retry, retry_count, category)
  if retry_count >= policy_int(retry, 'max_retries', DEFAULTS.max_retries, 0, U32_MAX) then
    return false
  end
  local cats = field(retry, 'retryable_categories') or {}
  if #cats == 0 then return true end
  if category == nil then return false end
  for _, cat in ipairs(cats) do
    if cat == category then return true end
  end
  return false
end


-- Backoff.delay_for; `u` in [0, 1) stands in for the random draw of the jitter. The
-- growth saturates at the cap (`^` gives inf where Python's policy.grow catches overflow).
local function delay_for(backoff, retry_count, u)
  local delay
  if field(backoff, 'type') == 'fixed' then
    delay = policy_int(backoff, 'delay_ms', DEFAULTS.delay_ms, 0, DURATION_MAX_MS)
  else
    local initial = policy_int(backoff, 'initial_delay_ms', DEFAULTS.initial_delay_ms, 0,
                               DURATION_MAX_MS)
    local multiplier = bounded(field(backoff, 'multiplier'), DEFAULTS.multiplier,
                               LIMITS.multiplier_min, LIMITS.multiplier_max)
    local cap = policy_int(backoff, 'max_delay_ms', DEFAULTS.max_delay_ms, 0, DURATION_MAX_MS)
    delay = math.min(initial * multiplier ^ retry_count, cap)
  end
  delay = math.floor(delay)
  if field(backoff, 'jitter') and delay > 1 then
    local lo = math.floor(delay / 2)
    delay = math.min(delay, lo + math.floor(u * (delay - lo + 1)))
  end
  return delay
end

local function reclaim_cap_reached(ex)
  return ex.lease_reclaim_count >= max_reclaim_count(ex)
end

-- -- operator ops ------------------------------------------------------------------------------

local function rule_change_priority(ex, c, a)
  if ex.lifecycle_phase ~= 'runnable' or ex.eligibility_state ~= 'eligible_now' then
    return nil, fail_with('execution_not_eligible', {execution_id = ex.execution_id,
                                                     public_state = ex.public_state})
  end
  ex.priority = clamp_priority(a.priority)
  ex.last_mutation_at = c.now
  return {Changed = {execution_id = ex.execution_id}}
end

local function rule_replay(ex, c)
  if ex.lifecycle_phase ~= 'terminal' then
    return nil, fail_with('execution_not_terminal', {execution_id = ex.execution_id,
                                                     public_state = ex.public_state})
  end
  local limit = policy_int(policy_of(ex), 'max_replay_count', DEFAULTS.max_replay_count, 0,
                          U32_MAX)
  if ex.replay_count >= limit then
    return nil, fail_with('max_replays_exhausted', {execution_id = ex.execution_id,
                                                    replay_count = ex.replay_count,
                                                    limit = limit})
  end
  ex.replay_count = ex.replay_count + 1
  runnable(ex, c, 'pending_replay_attempt', nil, 'waiting_for_worker')
  ex.completed_at = nil
  ex.has_result, ex.result_encoding, c.result = 0, nil, false
  return {Replayed = {public_state = ex.public_state}}
end

local function rule_revoke_lease(ex, c, a)
  if ex.lifecycle_phase ~= 'active' then return nil, not_active(ex) end
  if ex.ownership_state == 'lease_revoked' then
    return {AlreadySatisfied = {reason = 'already_revoked'}}
  end
  if ex.ownership_state == 'lease_expired_reclaimable' then
    return {AlreadySatisfied = {reason = 'already_expired'}}
  end
  if ex.ownership_state ~= 'leased' then
    return {AlreadySatisfied = {reason = 'no_active_lease'}}
  end
  local outcome = {Revoked = {lease_id = ex.current_lease_id or NULL,
                              lease_epoch = to_text(ex.current_lease_epoch)}}
  set_state(ex, c, 'active', 'lease_revoked', ex.eligibility_state, 'waiting_for_worker', 'none',
            'attempt_interrupted', 'lease revoked: ' .. a.reason)
  ex.lease_revoked_at, ex.lease_revoke_reason = c.now, a.reason
  return outcome
end

-- -- scanner primitives ------------------------------------------------------------------------

local function fail_reclaim_cap(ex, c)
  local limit = max_reclaim_count(ex)
  attempt_update(ex.execution_id, ex.current_attempt_index, {
    attempt_state = 'ended_failure', ended_at = c.now, failure_reason = 'max_reclaims_exceeded'})
  ex.failure_reason = 'max_reclaims_exceeded'
  ex.failure_category = 'lease_lost'
  terminal(ex, c, 'failed')
  ex.blocking_detail = 'lease lost ' .. to_text(ex.lease_reclaim_count + 1) ..
                       ' times; policy max_reclaim_count=' .. to_text(limit)
  return {ReclaimCapExceeded = {execution_id = ex.execution_id, reclaim_count = limit}}
end

local function rule_mark_lease_expired(ex, c)
  if ex.lifecycle_phase ~= 'active' or ex.ownership_state ~= 'leased'
      or ex.lease_expires_at == nil or ex.lease_expires_at > c.now then
    return nil
  end
  if reclaim_cap_reached(ex) then return fail_reclaim_cap(ex, c) end
  set_state(ex, c, 'active', 'lease_expired_reclaimable', ex.eligibility_state,
            'waiting_for_worker', 'none', 'attempt_interrupted', 'lease expired, awaiting reclaim')
  ex.lease_expired_at = c.now
  return {MarkedExpired = {execution_id = ex.execution_id}}
end

local function rule_promote_delayed(ex, c)
  if ex.lifecycle_phase ~= 'runnable' or ex.eligibility_state ~= 'not_eligible_until_time'
      or ex.delay_until == nil or ex.delay_until > c.now then
    return nil
  end
  set_state(ex, c, 'runnable', 'unowned', 'eligible_now', 'waiting_for_worker', 'none',
            ex.attempt_state)
  return {Promoted = {execution_id = ex.execution_id}}
end

local function retry_outcome(ex)
  return {RetryScheduled = {execution_id = ex.execution_id, public_state = ex.public_state,
                            delay_until = ex.delay_until or ex.last_transition_at,
                            next_attempt_index = ex.total_attempt_count}}
end

local function fail_attempt(ex, c, reason, category, exhausted)
  ex.failure_reason, ex.failure_category = reason, category
  local retry = field(policy_of(ex), 'retry_policy')
  if retry ~= nil and retry_allows(retry, ex.retry_count, category) then
    local delay = delay_for(field(retry, 'backoff') or {}, ex.retry_count, c.u or 0)
    local failed_index = ex.current_attempt_index
    ex.pending_retry_reason = reason
    ex.pending_previous_attempt_index = failed_index
    ex.retry_count = ex.retry_count + 1
    ex.current_attempt_id = nil
    runnable(ex, c, 'pending_retry_attempt', c.now + delay, 'waiting_for_retry_backoff',
             'retry backoff until ' .. to_text(c.now + delay) .. ' (attempt ' ..
             py(failed_index) .. ' failed: ' .. reason .. ')')
    return retry_outcome(ex)
  end
  terminal(ex, c, exhausted)
  return summary(ex, exhausted == 'failed' and 'TerminalFailed' or 'Expired')
end

local function rule_expire_attempt(ex, c)
  if ex.lifecycle_phase ~= 'active' or ex.attempt_deadline_at == nil
      or ex.attempt_deadline_at > c.now then
    return nil
  end
  attempt_update(ex.execution_id, ex.current_attempt_index, {
    attempt_state = 'ended_failure', ended_at = c.now, failure_reason = 'attempt_timeout',
    failure_category = 'timeout'})
  return fail_attempt(ex, c, 'attempt_timeout', 'timeout', 'expired')
end

local function rule_expire_execution(ex, c)
  if ex.lifecycle_phase == 'terminal' or ex.execution_deadline_at == nil
      or ex.execution_deadline_at > c.now then
    return nil
  end
  if ex.attempt_state == 'running_attempt' or ex.attempt_state == 'attempt_interrupted' then
    attempt_update(ex.execution_id, ex.current_attempt_index, {
      attempt_state = 'ended_failure', ended_at = c.now, failure_reason = 'execution_deadline'})
  end
  ex.failure_reason = 'execution_deadline'
  terminal(ex, c, 'expired')
  return summary(ex, 'Expired')
end

-- Retention: delete a terminal execution whose time is up (the caller deletes on c.delete).
local function rule_purge(ex, c)
  if ex.purge_at == nil or ex.purge_at > c.now then return nil end
  c.delete = true
  return {Purged = {execution_id = ex.execution_id}}
end

-- A scanner keeps failing on this execution: end it as failed with the reason (nil once
-- terminal: nothing to do).
local function rule_quarantine(ex, c, a)
  if ex.lifecycle_phase == 'terminal' then return nil end
  if ex.attempt_state == 'running_attempt' or ex.attempt_state == 'attempt_interrupted' then
    attempt_update(ex.execution_id, ex.current_attempt_index, {
      attempt_state = 'ended_failure', ended_at = c.now, failure_reason = a.reason})
  end
  ex.failure_reason, ex.failure_category = a.reason, 'internal'
  terminal(ex, c, 'failed')
  return summary(ex, 'TerminalFailed')
end

-- -- lease-bound worker ops --------------------------------------------------------------------

-- Active, not revoked, not expired (marking it if due: the caller commits, then answers the
-- error), and our fence. Returns nil when the lease holds.
local function check_lease(ex, fence, c)
  if ex.lifecycle_phase ~= 'active' then return not_active(ex) end
  local mine = fence.lease_id == ex.current_lease_id
               and fence.lease_epoch == ex.current_lease_epoch
               and fence.attempt_id == ex.current_attempt_id
  if ex.ownership_state == 'lease_revoked' and mine then
    return fail_with('lease_revoked', {execution_id = ex.execution_id,
                                       reason = ex.lease_revoke_reason or NULL})
  end
  if ex.ownership_state == 'lease_expired_reclaimable' and mine then
    return fail_with('lease_expired', {execution_id = ex.execution_id,
                                       lease_expires_at = ex.lease_expires_at or NULL})
  end
  if not mine then
    return fail_with('stale_lease', {execution_id = ex.execution_id, held = fence.lease_epoch,
                                     lease_epoch = ex.current_lease_epoch})
  end
  if ex.lease_expires_at ~= nil and ex.lease_expires_at <= c.now then
    rule_mark_lease_expired(ex, c)
    local e = fail_with('lease_expired', {execution_id = ex.execution_id,
                                          lease_expires_at = ex.lease_expires_at or NULL})
    e.commit = true
    return e
  end
  return nil
end

local function rule_cancel(ex, c, a)
  local fence = a.fence
  if ex.lifecycle_phase == 'terminal' then
    if fence and ex.terminal_outcome == 'cancelled'
        and fence.lease_epoch == ex.current_lease_epoch
        and fence.attempt_id == ex.current_attempt_id then
      return summary(ex, 'Cancelled')
    end
    return nil, not_active(ex)
  end
  if fence then
    local e = check_lease(ex, fence, c)
    if e then return nil, e end
  elseif ex.lifecycle_phase == 'active' and a.source ~= OPERATOR then
    return nil, fail_with('fence_required', {source = a.source})
  end
  if ex.attempt_state == 'running_attempt' or ex.attempt_state == 'attempt_interrupted' then
    attempt_update(ex.execution_id, ex.current_attempt_index, {
      attempt_state = 'ended_cancelled', ended_at = c.now,
      failure_reason = 'cancelled: ' .. a.reason})
  end
  ex.cancellation_reason = a.reason
  if a.source ~= nil and a.source ~= '' then
    ex.cancelled_by = a.source
  else
    ex.cancelled_by = ex.execution_id
  end
  terminal(ex, c, 'cancelled')
  return summary(ex, 'Cancelled')
end

local function set_expiry(ex, ttl, c)
  ex.lease_ttl_ms = ttl
  ex.lease_expires_at = c.now + ttl
  ex.lease_renewal_deadline = c.now + math.floor(ttl * 2 / 3)
end

local function rule_renew(ex, c, a)
  local e = check_lease(ex, a.fence, c)
  if e then return nil, e end
  set_expiry(ex, a.lease_ttl_ms or ex.lease_ttl_ms or 30000, c)
  ex.lease_last_renewed_at, ex.last_mutation_at = c.now, c.now
  return {lease_expires_at = ex.lease_expires_at, lease_epoch = ex.current_lease_epoch,
          lease_renewal_deadline = ex.lease_renewal_deadline}
end

local function rule_progress(ex, c, a)
  local e = check_lease(ex, a.fence, c)
  if e then return nil, e end
  if a.progress_pct ~= nil then ex.progress_pct = a.progress_pct end
  if a.progress_message ~= nil then ex.progress_message = a.progress_message end
  ex.progress_updated_at, ex.last_mutation_at = c.now, c.now
  return {progress_pct = ex.progress_pct or NULL, progress_message = ex.progress_message or NULL,
          progress_updated_at = ex.progress_updated_at}
end

local function same_holder_finished(ex, fence)
  return ex.current_lease_epoch == fence.lease_epoch and ex.lifecycle_phase ~= 'active'
end

local function rule_complete(ex, c, a)
  local fence = a.fence
  if same_holder_finished(ex, fence) and ex.terminal_outcome == 'success'
      and ex.current_attempt_id == fence.attempt_id then
    return summary(ex, 'Completed')
  end
  local e = check_lease(ex, fence, c)
  if e then return nil, e end
  attempt_update(ex.execution_id, ex.current_attempt_index,
                 {attempt_state = 'ended_success', ended_at = c.now})
  if a.result ~= '' then
    ex.has_result, c.result = 1, a.result
  else
    ex.has_result, c.result = 0, false
  end
  ex.result_encoding = a.result_encoding
  terminal(ex, c, 'success')
  return summary(ex, 'Completed')
end

local function rule_fail(ex, c, a)
  local fence = a.fence
  if same_holder_finished(ex, fence) then
    if ex.lifecycle_phase == 'terminal' and ex.terminal_outcome == 'failed'
        and ex.current_attempt_id == fence.attempt_id then
      return summary(ex, 'TerminalFailed')
    end
    if ex.attempt_state == 'pending_retry_attempt' then return retry_outcome(ex) end
  end
  local e = check_lease(ex, fence, c)
  if e then return nil, e end
  attempt_update(ex.execution_id, ex.current_attempt_index, {
    attempt_state = 'ended_failure', ended_at = c.now, failure_reason = a.failure_reason,
    failure_category = a.failure_category or NULL})
  return fail_attempt(ex, c, a.failure_reason, a.failure_category, 'failed')
end

local function rule_delay(ex, c, a)
  local e = check_lease(ex, a.fence, c)
  if e then return nil, e end
  attempt_update(ex.execution_id, ex.current_attempt_index, {
    attempt_state = 'suspended', suspended_at = c.now, suspension_id = 'worker_delay'})
  runnable(ex, c, 'attempt_interrupted', a.delay_until, 'waiting_for_delay')
  return {Delayed = {execution_id = ex.execution_id, public_state = ex.public_state,
                     delay_until = a.delay_until}}
end

-- -- claiming ----------------------------------------------------------------------------------

local function capability_match(ex, worker_caps)
  local required = ex.required_capabilities
  if required == nil or required == '' then return true end
  for cap in string.gmatch(required, '[^,]+') do
    if not worker_caps[cap] then return false end
  end
  return true
end

-- Lease a claimable execution. Returns (outcome, attempt_type); the outcome is
-- ReclaimCapExceeded when the reclaim cap ended the execution instead.
local function rule_claim(ex, c, a)
  local now = c.now
  local lease_id, attempt_id = a.lease_id, a.attempt_id
  local index, attempt_type, new_attempt
  if ex.lifecycle_phase == 'active' then
    if reclaim_cap_reached(ex) then return fail_reclaim_cap(ex, c), nil end
    index, attempt_type = ex.total_attempt_count, 'reclaim'
    local previous = ex.current_attempt_index
    attempt_update(ex.execution_id, previous, {attempt_state = 'interrupted_reclaimed',
                                               ended_at = now,
                                               failure_reason = ex.ownership_state})
    new_attempt = {execution_id = ex.execution_id, attempt_index = index,
                   attempt_id = attempt_id, attempt_type = attempt_type,
                   attempt_state = 'started', created_at = now,
                   previous_attempt_index = previous, reason = ex.ownership_state}
    ex.lease_reclaim_count = ex.lease_reclaim_count + 1
  elseif ex.attempt_state == 'attempt_interrupted' then
    index, attempt_type = ex.current_attempt_index or 0, 'resumed'
    attempt_id = ex.current_attempt_id or attempt_id
  else
    index = ex.total_attempt_count
    if ex.attempt_state == 'pending_retry_attempt' then
      attempt_type = 'retry'
    elseif ex.attempt_state == 'pending_replay_attempt' then
      attempt_type = 'replay'
    else
      attempt_type = 'initial'
    end
    local previous = nil
    if attempt_type == 'retry' then previous = ex.pending_previous_attempt_index end
    new_attempt = {execution_id = ex.execution_id, attempt_index = index,
                   attempt_id = attempt_id, attempt_type = attempt_type,
                   attempt_state = 'started', created_at = now,
                   previous_attempt_index = previous, reason = ex.pending_retry_reason}
  end
  if new_attempt then ex.total_attempt_count = ex.total_attempt_count + 1 end
  local epoch = ex.current_lease_epoch + 1
  clear_lease(ex)
  set_state(ex, c, 'active', 'leased', 'not_applicable', 'none', 'none', 'running_attempt')
  ex.current_attempt_index, ex.current_attempt_id = index, attempt_id
  ex.current_lease_id, ex.current_lease_epoch = lease_id, epoch
  ex.current_worker_id, ex.current_worker_instance_id = a.worker_id, a.worker_instance_id
  ex.lease_acquired_at, ex.lease_last_renewed_at = now, now
  set_expiry(ex, a.lease_ttl_ms, c)
  ex.started_at = ex.started_at or now
  ex.pending_retry_reason, ex.pending_previous_attempt_index = nil, nil
  local timeout = policy_int(field(policy_of(ex), 'timeout_policy'), 'attempt_timeout_ms', nil, 1,
                             DURATION_MAX_MS)
  if timeout then ex.attempt_deadline_at = now + timeout else ex.attempt_deadline_at = nil end
  local lease = {lease_id = lease_id, lease_epoch = epoch, worker_id = a.worker_id,
                 worker_instance_id = a.worker_instance_id}
  if new_attempt then
    new_attempt.started_at = now
    for k, v in pairs(lease) do new_attempt[k] = v end
    attempt_new(new_attempt)
  else
    lease.attempt_state, lease.resumed_at = 'started', now
    lease.suspended_at, lease.suspension_id = NULL, NULL
    attempt_update(ex.execution_id, index, lease)
  end
  return {Claimed = {execution_id = ex.execution_id}}, attempt_type
end

-- -- claim grants (admission.expire_grant) ---------------------------------------------------

-- An unredeemed grant ran out: the execution is claimable again.
local function rule_expire_grant(ex, c)
  if ex.grant_expires_at == nil or ex.grant_expires_at > c.now then return nil end
  ex.grant_worker_id, ex.grant_expires_at = nil, nil
  ex.claimable = is_claimable(ex.lifecycle_phase, ex.ownership_state, ex.eligibility_state)
                 and 1 or 0
  ex.last_mutation_at = c.now
  return {GrantExpired = {execution_id = ex.execution_id}}
end

RULES.change_priority = rule_change_priority
RULES.expire_grant = rule_expire_grant
RULES.replay = rule_replay
RULES.cancel = rule_cancel
RULES.revoke_lease = rule_revoke_lease
RULES.renew = rule_renew
RULES.progress = rule_progress
RULES.complete = rule_complete
RULES.fail = rule_fail
RULES.delay = rule_delay
RULES.mark_lease_expired = rule_mark_lease_expired
RULES.promote_delayed = rule_promote_delayed
RULES.expire_attempt = rule_expire_attempt
RULES.expire_execution = rule_expire_execution
RULES.purge = rule_purge
RULES.quarantine = rule_quarantine
