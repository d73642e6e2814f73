//! The schema: one numbered list of migrations for both backends. A step is one text that both
//! databases run, or (for the steps written before the backends shared their SQL, and where the
//! databases differ, as in how a sequence survives its rows' deletion) a text for each. Each
//! backend counts the steps it has applied and runs the rest, in order, in one transaction.
//!
//! Shared steps use the types both databases read the same: `TEXT`, `BIGINT`,
//! `DOUBLE PRECISION`.

use super::sql::Dialect;

pub struct Migration {
    sqlite: &'static str,
    postgres: &'static str,
}

impl Migration {
    /// A step both databases run as it is.
    const fn same(sql: &'static str) -> Self {
        Migration {
            sqlite: sql,
            postgres: sql,
        }
    }

    /// A step with a text for each database.
    const fn each(sqlite: &'static str, postgres: &'static str) -> Self {
        Migration { sqlite, postgres }
    }

    pub fn text(&self, dialect: Dialect) -> &'static str {
        match dialect {
            Dialect::Sqlite => self.sqlite,
            Dialect::Postgres => self.postgres,
        }
    }
}

pub const MIGRATIONS: &[Migration] = &[
    Migration::each(
        r#"
CREATE TABLE clusters (
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (account, region, name)
);
CREATE TABLE task_definitions (
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    family TEXT NOT NULL,
    revision INTEGER NOT NULL,
    status TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (account, region, family, revision)
);
CREATE TABLE container_instances (
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    cluster TEXT NOT NULL,
    id TEXT NOT NULL,
    status TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (account, region, cluster, id)
);
CREATE TABLE tasks (
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    cluster TEXT NOT NULL,
    id TEXT NOT NULL,
    container_instance TEXT,
    last_status TEXT NOT NULL,
    desired_status TEXT NOT NULL,
    stopped_at REAL,
    family TEXT NOT NULL,
    group_name TEXT,
    started_by TEXT,
    launch_type TEXT,
    client_token TEXT,
    reservation TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (account, region, cluster, id)
);
CREATE INDEX tasks_holding_resources
    ON tasks (account, region, cluster, container_instance, last_status)
    WHERE last_status <> 'STOPPED';
CREATE TABLE instance_usage (
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    cluster TEXT NOT NULL,
    instance TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (account, region, cluster, instance)
);
CREATE TABLE task_attachments (
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    cluster TEXT NOT NULL,
    attachment_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    PRIMARY KEY (account, region, cluster, attachment_id)
);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    cluster TEXT NOT NULL,
    detail_type TEXT NOT NULL,
    time REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX events_by_time ON events (time);
CREATE TABLE cursors (
    name TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);
CREATE INDEX tasks_by_desired_status ON tasks (account, region, cluster, desired_status, id);
CREATE INDEX tasks_stopped ON tasks (stopped_at) WHERE last_status = 'STOPPED';
CREATE INDEX tasks_by_client_token ON tasks (account, region, cluster, client_token) WHERE client_token IS NOT NULL;
"#,
        r#"
CREATE TABLE clusters (
    account TEXT NOT NULL, region TEXT NOT NULL, name TEXT NOT NULL,
    status TEXT NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (account, region, name)
);
CREATE TABLE task_definitions (
    account TEXT NOT NULL, region TEXT NOT NULL, family TEXT NOT NULL, revision BIGINT NOT NULL,
    status TEXT NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (account, region, family, revision)
);
CREATE TABLE container_instances (
    account TEXT NOT NULL, region TEXT NOT NULL, cluster TEXT NOT NULL, id TEXT NOT NULL,
    status TEXT NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (account, region, cluster, id)
);
CREATE TABLE tasks (
    account TEXT NOT NULL, region TEXT NOT NULL, cluster TEXT NOT NULL, id TEXT NOT NULL,
    position BIGSERIAL,
    container_instance TEXT,
    last_status TEXT NOT NULL,
    desired_status TEXT NOT NULL,
    stopped_at DOUBLE PRECISION,
    family TEXT NOT NULL,
    group_name TEXT,
    started_by TEXT,
    launch_type TEXT,
    client_token TEXT,
    reservation TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (account, region, cluster, id)
);
CREATE INDEX tasks_holding_resources ON tasks (account, region, cluster, container_instance, last_status)
    WHERE last_status <> 'STOPPED';
CREATE INDEX tasks_by_desired_status ON tasks (account, region, cluster, desired_status, id);
CREATE INDEX tasks_stopped ON tasks (stopped_at) WHERE last_status = 'STOPPED';
CREATE INDEX tasks_by_client_token ON tasks (account, region, cluster, client_token) WHERE client_token IS NOT NULL;
CREATE TABLE instance_usage (
    account TEXT NOT NULL, region TEXT NOT NULL, cluster TEXT NOT NULL, instance TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (account, region, cluster, instance)
);
CREATE TABLE task_attachments (
    account TEXT NOT NULL, region TEXT NOT NULL, cluster TEXT NOT NULL, attachment_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    PRIMARY KEY (account, region, cluster, attachment_id)
);
CREATE TABLE events (
    seq BIGINT PRIMARY KEY,
    account TEXT NOT NULL, region TEXT NOT NULL, cluster TEXT NOT NULL,
    detail_type TEXT NOT NULL, time DOUBLE PRECISION NOT NULL, body TEXT NOT NULL
);
CREATE INDEX events_by_time ON events (time);
CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
INSERT INTO counters (name, value) VALUES ('event', 0);
CREATE TABLE cursors (name TEXT PRIMARY KEY, seq BIGINT NOT NULL);
"#,
    ),
    Migration::each(
        r#"
-- The desired status the task's agent last acknowledged over ACS (NULL: never delivered).
ALTER TABLE tasks ADD COLUMN delivered TEXT;
-- The last sequence number given to an ACS message for the instance.
ALTER TABLE container_instances ADD COLUMN acs_seq INTEGER NOT NULL DEFAULT 0;
"#,
        r#"
-- The desired status the task's agent last acknowledged over ACS (NULL: never delivered).
ALTER TABLE tasks ADD COLUMN delivered TEXT;
-- The last sequence number given to an ACS message for the instance.
ALTER TABLE container_instances ADD COLUMN acs_seq BIGINT NOT NULL DEFAULT 0;
"#,
    ),
    Migration::each(
        r#"
-- Each process's lease on the agent connections it holds: a connection whose process's lease
-- has lapsed is taken for closed, whoever notices first.
CREATE TABLE processes (id TEXT PRIMARY KEY, expires_at REAL NOT NULL);
-- The process holding the instance's agent connection (NULL: none).
ALTER TABLE container_instances ADD COLUMN agent_process TEXT;
-- Connections recorded before leases existed belong to no live process.
UPDATE container_instances SET agent_process = '' WHERE json_extract(doc, '$.agentConnected') = 1;
CREATE INDEX container_instances_with_agents ON container_instances (agent_process) WHERE agent_process IS NOT NULL;
-- The fingerprint of the RunTask request that made the task, beside its client token.
ALTER TABLE tasks ADD COLUMN client_request TEXT;
-- What the change means for the agent channels (domain::events::Notice), if anything.
ALTER TABLE events ADD COLUMN notice TEXT;
"#,
        r#"
-- Each process's lease on the agent connections it holds: a connection whose process's lease
-- has lapsed is taken for closed, whoever notices first.
CREATE TABLE processes (id TEXT PRIMARY KEY, expires_at DOUBLE PRECISION NOT NULL);
-- The process holding the instance's agent connection (NULL: none).
ALTER TABLE container_instances ADD COLUMN agent_process TEXT;
-- Connections recorded before leases existed belong to no live process.
UPDATE container_instances SET agent_process = '' WHERE (doc::json ->> 'agentConnected') = 'true';
CREATE INDEX container_instances_with_agents ON container_instances (agent_process) WHERE agent_process IS NOT NULL;
-- The fingerprint of the RunTask request that made the task, beside its client token.
ALTER TABLE tasks ADD COLUMN client_request TEXT;
-- What the change means for the agent channels (domain::events::Notice), if anything.
ALTER TABLE events ADD COLUMN notice TEXT;
"#,
    ),
    // Event numbers come from the `counters` row on both databases (SQLite numbered them with
    // AUTOINCREMENT): the count starts at the highest number SQLite ever gave out, not at the
    // highest still stored, so none is given twice after a sweep.
    Migration::each(
        r#"
CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
INSERT INTO counters (name, value)
    VALUES ('event', COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0));
"#,
        "",
    ),
    Migration::same(
        r#"
CREATE TABLE services (
    account TEXT NOT NULL, region TEXT NOT NULL, cluster TEXT NOT NULL, name TEXT NOT NULL,
    status TEXT NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (account, region, cluster, name)
);
CREATE INDEX services_to_schedule ON services (status) WHERE status <> 'INACTIVE';
CREATE INDEX tasks_by_group ON tasks (account, region, cluster, group_name, stopped_at);
"#,
    ),
    Migration::same(
        r#"
CREATE TABLE account_settings (
    account TEXT NOT NULL, region TEXT NOT NULL, principal TEXT NOT NULL, name TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (account, region, principal, name)
);
CREATE TABLE task_protections (
    account TEXT NOT NULL, region TEXT NOT NULL, cluster TEXT NOT NULL, id TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (account, region, cluster, id)
);
CREATE TABLE capacity_providers (
    account TEXT NOT NULL, region TEXT NOT NULL, name TEXT NOT NULL,
    status TEXT NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (account, region, name)
);
-- The addresses the network interfaces of the tasks ecsd runs itself hold, one task each.
CREATE TABLE network_addresses (
    account TEXT NOT NULL, region TEXT NOT NULL, subnet TEXT NOT NULL, address TEXT NOT NULL,
    task TEXT NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (account, region, subnet, address)
);
-- Services by how their tasks run (cluster statistics count them so).
ALTER TABLE services ADD COLUMN launch_type TEXT;
-- The tasks ecsd runs itself (Fargate), until they stop.
CREATE INDEX tasks_hosted ON tasks (launch_type) WHERE launch_type = 'FARGATE' AND last_status <> 'STOPPED';
"#,
    ),
    Migration::same(
        r#"
-- The web console's signed-in sessions, by the digest of their token.
CREATE TABLE console_sessions (
    account TEXT NOT NULL, region TEXT NOT NULL, id TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (account, region, id)
);
CREATE INDEX console_sessions_by_expiry ON console_sessions (expires_at);
"#,
    ),
];

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Dialect, MIGRATIONS};
    use crate::domain::Scope;
    use crate::store::{EventQuery, SqliteStore, Store, StoreError, StoreExt};

    #[tokio::test]
    async fn an_sqlite_store_from_before_counters_keeps_numbering_events_after_a_sweep() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("ecsd.db");
        {
            let conn = rusqlite::Connection::open(&path).expect("opens");
            for step in &MIGRATIONS[..3] {
                conn.execute_batch(step.text(Dialect::Sqlite))
                    .expect("an old step applies");
            }
            conn.pragma_update(None, "user_version", 3).expect("sets the version");
            for _ in 0..2 {
                conn.execute(
                    "INSERT INTO events (account, region, cluster, detail_type, time, body) VALUES ('a', 'r', 'c', 'd', 1.0, '{}')",
                    [],
                )
                .expect("an event is stored");
            }
            conn.execute("DELETE FROM events", []).expect("the sweep");
        }
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).expect("migrates"));
        store
            .write(&Scope::new("a", "r"), |tx| tx.append_event("c", "d", 2.0, "{}", None))
            .await
            .map_err(|e: StoreError| e)
            .expect("appends");
        let page = store
            .events(EventQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .expect("reads");
        assert_eq!(page.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [3]);
    }
}
