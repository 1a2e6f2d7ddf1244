-- Part 4: registration. Every operation core.operations declares (OPERATIONS, generated) gets
-- a function from its rule in RULES; ff_operations answers which did (an operation without a
-- Lua rule is one this store does not support; tests keep the in-tree ones complete).
-- Only the core language works while a library loads (no pairs, no error): hence the loop.

local supported = {}
for i = 1, #OPERATIONS do
  local name, fn = OPERATIONS[i][1], OPERATIONS[i][2]
  if RULES[name] ~= nil then
    register(fn, operation(RULES[name]))
    supported[#supported + 1] = name
  end
end

register_read('ff_version', function() return LIBRARY_VERSION .. '.' .. SOURCE_DIGEST end)
register_read('ff_operations', function() return supported end)
register_read('ff_read', read)
register('ff_create', create)
register('ff_create_many', create_many)
register('ff_apply_many', apply_many)
-- Claims and flow resolutions answer no stream wake keys (as the SQL stores': see
-- STREAM.quietly); the closes they make are published to every appliance.
register_raw('ff_claim', STREAM.quietly(claim))
register('ff_flow_create', flow_create)
register('ff_flow_add_member', flow_add_member)
register('ff_flow_stage', flow_stage)
register('ff_flow_apply', STREAM.quietly(flow_apply))
register('ff_flow_set_group', flow_set_group)
register('ff_flow_cancel', STREAM.quietly(flow_cancel))
register('ff_flow_cancel_members', STREAM.quietly(flow_cancel_members))
register('ff_flow_reconcile', STREAM.quietly(flow_reconcile))
register_read('ff_flow_describe', flow_describe)
register('ff_wp_create', SUSP.create_waitpoint)
register_rows('ff_wp_suspend', SUSP.suspend)
register('ff_wp_wait_children', SUSP.wait_children)
register('ff_wp_deliver', SUSP.deliver)
register('ff_wp_expire_pending', SUSP.expire_pending)
register('ff_wp_keys_seed', SUSP.keys_seed)
register('ff_wp_keys_rotate', SUSP.keys_rotate)
register_read('ff_wp_list', SUSP.list)
register_read('ff_wp_resume_signals', SUSP.resume_signals)
register_rows('ff_redeem', ADM.redeem)
register('ff_reclaim_grant', ADM.reclaim_grant)
register('ff_budget_create', ADM.budget_create)
register_read('ff_budget_get', ADM.budget_get)
register('ff_budget_report', ADM.budget_report)
register('ff_budget_reset', ADM.budget_reset)
register('ff_budget_reset_due', ADM.budget_reset_due)
register('ff_quota_create', ADM.quota_create)
register('ff_quota_reserve', ADM.quota_reserve)
register('ff_quota_commit', ADM.quota_commit)
register('ff_quota_drop', ADM.quota_drop)
register('ff_quota_view', ADM.quota_view)
register('ff_quota_sweep', ADM.quota_sweep)
register('ff_worker_register', ADM.worker_register)
register('ff_worker_forget', ADM.worker_forget)
register('ff_stream_append', STREAM.append)
register_read('ff_stream_state', STREAM.state)
register_read('ff_stream_read', STREAM.read)
register_read('ff_stream_summary', STREAM.summary)
