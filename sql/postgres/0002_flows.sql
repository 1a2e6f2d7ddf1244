-- Flows: the flow records, their edges, one edge group per downstream member, the keys of
-- members made by a one-call DAG, and the members a flow cancel still owes a cancel.
-- Members are ff_exec rows whose flow_id names the flow. As sqlite/0002_flows.sql.

CREATE TABLE ff_flow (
    flow_id             TEXT COLLATE "C" PRIMARY KEY,
    partition_id        BIGINT NOT NULL,
    flow_kind           TEXT NOT NULL,
    namespace           TEXT COLLATE "C" NOT NULL,
    state               TEXT NOT NULL,
    graph_revision      BIGINT NOT NULL,
    node_count          BIGINT NOT NULL,
    edge_count          BIGINT NOT NULL,
    created_at          BIGINT NOT NULL,
    last_mutation_at    BIGINT NOT NULL,
    cancelled_at        BIGINT,
    cancel_reason       TEXT,
    cancellation_policy TEXT
);
CREATE INDEX ff_flow_by_namespace ON ff_flow (namespace, flow_id);

CREATE INDEX ff_exec_by_flow ON ff_exec (flow_id, execution_id) WHERE flow_id IS NOT NULL;

CREATE TABLE ff_edge (
    edge_id                 TEXT COLLATE "C" NOT NULL,
    flow_id                 TEXT COLLATE "C" NOT NULL,
    upstream_execution_id   TEXT COLLATE "C" NOT NULL,
    downstream_execution_id TEXT COLLATE "C" NOT NULL,
    dependency_kind         TEXT NOT NULL,
    data_passing_ref        TEXT,
    state                   TEXT NOT NULL,
    created_at              BIGINT NOT NULL,
    applied_at              BIGINT,
    resolved_at             BIGINT,
    PRIMARY KEY (flow_id, edge_id)
);
CREATE INDEX ff_edge_out ON ff_edge (upstream_execution_id) WHERE state = 'unsatisfied';
CREATE INDEX ff_edge_in ON ff_edge (downstream_execution_id);

CREATE TABLE ff_edge_group (
    downstream_execution_id TEXT COLLATE "C" PRIMARY KEY,
    flow_id                 TEXT COLLATE "C" NOT NULL,
    policy                  TEXT NOT NULL,
    k                       BIGINT NOT NULL,
    on_satisfied            TEXT NOT NULL,
    n                       BIGINT NOT NULL,
    succeeded               BIGINT NOT NULL,
    failed                  BIGINT NOT NULL,
    skipped                 BIGINT NOT NULL,
    state                   TEXT NOT NULL,
    satisfied_at            BIGINT
);
CREATE INDEX ff_edge_group_by_flow ON ff_edge_group (flow_id);

CREATE TABLE ff_flow_node (
    flow_id      TEXT COLLATE "C" NOT NULL,
    node_key     TEXT COLLATE "C" NOT NULL,
    execution_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (flow_id, node_key)
);

CREATE TABLE ff_flow_cancel (
    flow_id      TEXT COLLATE "C" NOT NULL,
    execution_id TEXT COLLATE "C" NOT NULL,
    due_at       BIGINT NOT NULL,
    PRIMARY KEY (flow_id, execution_id)
);
CREATE INDEX ff_flow_cancel_due ON ff_flow_cancel (due_at);
