-- Flows: the flow records, their edges, one edge group per downstream member, the keys of
-- members made by a one-call DAG, and the members a flow cancel still owes a cancel.
-- Members are ff_exec rows whose flow_id names the flow.

CREATE TABLE ff_flow (
    flow_id             TEXT PRIMARY KEY,
    partition_id        INTEGER NOT NULL,
    flow_kind           TEXT NOT NULL,
    namespace           TEXT NOT NULL,
    state               TEXT NOT NULL,
    graph_revision      INTEGER NOT NULL,
    node_count          INTEGER NOT NULL,
    edge_count          INTEGER NOT NULL,
    created_at          INTEGER NOT NULL,
    last_mutation_at    INTEGER NOT NULL,
    cancelled_at        INTEGER,
    cancel_reason       TEXT,
    cancellation_policy TEXT
);
CREATE INDEX ff_flow_by_namespace ON ff_flow (namespace, flow_id);

CREATE INDEX ff_exec_by_flow ON ff_exec (flow_id, execution_id) WHERE flow_id IS NOT NULL;

CREATE TABLE ff_edge (
    edge_id                 TEXT NOT NULL,
    flow_id                 TEXT NOT NULL,
    upstream_execution_id   TEXT NOT NULL,
    downstream_execution_id TEXT NOT NULL,
    dependency_kind         TEXT NOT NULL,
    data_passing_ref        TEXT,
    state                   TEXT NOT NULL,
    created_at              INTEGER NOT NULL,
    applied_at              INTEGER,
    resolved_at             INTEGER,
    PRIMARY KEY (flow_id, edge_id)
);
CREATE INDEX ff_edge_out ON ff_edge (upstream_execution_id) WHERE state = 'unsatisfied';
CREATE INDEX ff_edge_in ON ff_edge (downstream_execution_id);

CREATE TABLE ff_edge_group (
    downstream_execution_id TEXT PRIMARY KEY,
    flow_id                 TEXT NOT NULL,
    policy                  TEXT NOT NULL,
    k                       INTEGER NOT NULL,
    on_satisfied            TEXT NOT NULL,
    n                       INTEGER NOT NULL,
    succeeded               INTEGER NOT NULL,
    failed                  INTEGER NOT NULL,
    skipped                 INTEGER NOT NULL,
    state                   TEXT NOT NULL,
    satisfied_at            INTEGER
);
CREATE INDEX ff_edge_group_by_flow ON ff_edge_group (flow_id);

CREATE TABLE ff_flow_node (
    flow_id      TEXT NOT NULL,
    node_key     TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    PRIMARY KEY (flow_id, node_key)
);

CREATE TABLE ff_flow_cancel (
    flow_id      TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    due_at       INTEGER NOT NULL,
    PRIMARY KEY (flow_id, execution_id)
);
CREATE INDEX ff_flow_cancel_due ON ff_flow_cancel (due_at);
