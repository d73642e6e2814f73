//! The store conformance suite: what every backend must do, run against each of them. Records
//! round-trip; lists come in key order and resume after a key, also while records come and go;
//! event sequence numbers are never reused and no reader sees one before a smaller one;
//! records are deleted by key; cursors and sweeps; a domain abort rolls back its writes and only
//! its own; concurrent writers lose no update; what a write reads ahead is what it would read;
//! agent leases lapse.
//!
//! `cargo test -p ecsd store::conformance` runs it on SQLite, and on PostgreSQL too when
//! `ECSD_TEST_POSTGRES` names a database to connect to: each test then makes a database of its
//! own (named for this process and test, under the run's prefix `ECSD_TEST_DB_PREFIX`) and
//! drops it afterwards. A failing test's path names
//! the backend: `store::conformance::sqlite::…` or `store::conformance::postgres::…`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{FamilyStatus, NewTask, ReadAhead, Store, StoreError, StoreExt, TaskFilter, Tx};
use crate::domain::placement::{Reservation, Usage};
use crate::domain::records::{
    AccountSetting, Cluster, ConsoleSession, ContainerInstance, NetworkAddress, StoredTaskDefinition, Task,
};
use crate::domain::status::{ClusterStatus, TaskDefinitionStatus, TaskStatus};
use crate::domain::Scope;

fn scope() -> Scope {
    Scope::new("123456789012", "us-east-1")
}

fn cluster(name: &str) -> Cluster {
    Cluster {
        cluster_arn: scope().cluster_arn(name),
        cluster_name: name.into(),
        status: ClusterStatus::Active,
        options: serde_json::Map::new(),
    }
}

fn instance(id: &str) -> ContainerInstance {
    serde_json::from_value(json!({
        "containerInstanceArn": scope().container_instance_arn("c", id),
        "version": 1,
        "registeredResources": [],
        "status": "ACTIVE",
        "agentConnected": false,
        "attributes": [],
        "registeredAt": 1.0,
        "attachments": [],
        "tags": [],
    }))
    .expect("a valid instance")
}

fn task(id: &str, instance: &str) -> Task {
    serde_json::from_value(json!({
        "taskArn": scope().task_arn("c", id),
        "clusterArn": scope().cluster_arn("c"),
        "taskDefinitionArn": scope().task_definition_arn("f", 1),
        "containerInstanceArn": scope().container_instance_arn("c", instance),
        "overrides": {},
        "lastStatus": "PENDING",
        "desiredStatus": "RUNNING",
        "containers": [],
        "version": 1,
        "createdAt": 1.0,
        "group": "family:f",
        "attachments": [{"id": format!("eni-{id}"), "type": "ElasticNetworkInterface", "status": "PRECREATED", "details": []}],
        "tags": [],
        "enableExecuteCommand": false,
    }))
    .expect("a valid task")
}

fn need() -> Reservation {
    Reservation {
        cpu: 256,
        memory: 512,
        tcp_ports: vec![8080],
        udp_ports: vec![],
    }
}

async fn write<R: Send + 'static>(
    store: &Arc<dyn Store>,
    f: impl FnOnce(&mut Tx<'_>) -> Result<R, StoreError> + Send + 'static,
) -> R {
    store.write(&scope(), f).await.expect("the write commits")
}

async fn write_in<R: Send + 'static>(
    store: &Arc<dyn Store>,
    cluster: &str,
    f: impl FnOnce(&mut Tx<'_>) -> Result<R, StoreError> + Send + 'static,
) -> R {
    store.write_in(&scope(), cluster, f).await.expect("the write commits")
}

async fn read<R: Send + 'static>(
    store: &Arc<dyn Store>,
    f: impl FnOnce(&mut Tx<'_>) -> Result<R, StoreError> + Send + 'static,
) -> R {
    store.read(&scope(), f).await.expect("the read succeeds")
}

/// Events after `after`, at most `limit`, every one or only those with a notice.
async fn events(store: &Arc<dyn Store>, after: i64, limit: usize, noticed: bool) -> super::EventPage {
    let query = super::EventQuery {
        after,
        limit,
        noticed,
        ..Default::default()
    };
    store.events(query).await.expect("events are read")
}

/// Stores a task on `instance` of cluster `c`, with a client token.
fn insert(tx: &mut Tx<'_>, id: &str, instance: &str, token: Option<&str>) -> Result<(), StoreError> {
    let task = task(id, instance);
    tx.insert_task(&NewTask {
        client_token: token,
        client_request: token.map(|_| "fingerprint"),
        task: &task,
        reservation: &need(),
    })
}

fn running() -> TaskFilter {
    TaskFilter {
        desired_status: TaskStatus::Running,
        container_instance: None,
        family: None,
        started_by: None,
        launch_type: None,
        group: None,
    }
}

async fn records_round_trip_and_list_in_key_order(store: Arc<dyn Store>) {
    write(&store, |tx| {
        for name in ["gamma", "alpha", "beta"] {
            tx.put(&cluster(name))?;
        }
        tx.put(&instance("i1"))
    })
    .await;
    let (found, listed, resumed, instance_back) = read(&store, |tx| {
        Ok((
            tx.cluster("alpha")?,
            tx.list_clusters(None, 10)?,
            tx.list_clusters(Some("alpha"), 1)?,
            tx.container_instance("c", "i1")?,
        ))
    })
    .await;
    assert_eq!(found, Some(cluster("alpha")));
    let names: Vec<_> = listed.iter().map(|c| c.cluster_name.as_str()).collect();
    assert_eq!(names, ["alpha", "beta", "gamma"]);
    assert_eq!(resumed, vec![cluster("beta")]);
    assert_eq!(instance_back, Some(instance("i1")));
    // Another account sees none of it.
    let other = store
        .read(&Scope::new("999999999999", "us-east-1"), |tx| {
            tx.list_clusters(None, 10)
        })
        .await
        .unwrap();
    assert!(other.is_empty());
}

async fn records_are_deleted_by_key_and_only_theirs(store: Arc<dyn Store>) {
    let address = |a: &str| NetworkAddress {
        subnet: "subnet-1".into(),
        address: a.into(),
        task_arn: format!("task-{a}"),
    };
    write(&store, move |tx| {
        for a in ["10.0.0.5", "10.0.0.4"] {
            tx.put(&address(a))?;
        }
        tx.put(&AccountSetting {
            name: "containerInsights".into(),
            value: "enabled".into(),
            principal_arn: "arn:aws:iam::123456789012:root".into(),
        })
    })
    .await;
    let (deleted, again, left, setting) = write(&store, |tx| {
        let deleted = tx.delete::<NetworkAddress>(&["subnet-1".into(), "10.0.0.4".into()])?;
        let again = tx.delete::<NetworkAddress>(&["subnet-1".into(), "10.0.0.4".into()])?;
        let left = tx.list::<NetworkAddress>(&["subnet-1".into()], &[], None, 10)?;
        let setting =
            tx.get::<AccountSetting>(&["arn:aws:iam::123456789012:root".into(), "containerInsights".into()])?;
        Ok((deleted, again, left, setting))
    })
    .await;
    assert!(deleted && !again);
    assert_eq!(left, vec![address("10.0.0.5")]);
    assert_eq!(setting.map(|s| s.value).as_deref(), Some("enabled"));
}

async fn task_definitions_keep_their_revisions(store: Arc<dyn Store>) {
    write(&store, |tx| {
        for (family, revision, status) in [
            ("web", 1, TaskDefinitionStatus::Active),
            ("web", 2, TaskDefinitionStatus::Active),
            ("web", 3, TaskDefinitionStatus::Inactive),
            ("old", 1, TaskDefinitionStatus::Inactive),
        ] {
            let mut definition = serde_json::Map::new();
            definition.insert("family".into(), family.into());
            definition.insert("revision".into(), revision.into());
            let mut stored = StoredTaskDefinition {
                definition,
                tags: vec![],
            };
            stored.set_status(status);
            tx.put(&stored)?;
        }
        Ok(())
    })
    .await;
    let (latest, last, active, descending, all, inactive) = read(&store, |tx| {
        Ok((
            tx.latest_task_definition("web")?
                .map(|d| d.definition["revision"].clone()),
            tx.last_revision("web")?,
            tx.list_task_definitions(Some("we"), TaskDefinitionStatus::Active, false, None, 10)?,
            tx.list_task_definitions(None, TaskDefinitionStatus::Active, true, Some(("web", 2)), 10)?,
            tx.list_task_definition_families(None, FamilyStatus::All, None, 10)?,
            tx.list_task_definition_families(None, FamilyStatus::Inactive, None, 10)?,
        ))
    })
    .await;
    assert_eq!(latest, Some(json!(2)));
    assert_eq!(last, 3);
    assert_eq!(active, [("web".to_owned(), 1), ("web".to_owned(), 2)]);
    assert_eq!(descending, [("web".to_owned(), 1)]);
    assert_eq!(all, ["old", "web"]);
    assert_eq!(inactive, ["old"]);
}

async fn pages_stay_valid_while_records_come_and_go(store: Arc<dyn Store>) {
    write(&store, |tx| {
        tx.put(&instance("i1"))?;
        for id in ["t01", "t02", "t03", "t04", "t05", "t06"] {
            insert(tx, id, "i1", None)?;
        }
        Ok(())
    })
    .await;
    let first = read(&store, |tx| tx.list_tasks("c", &running(), None, 3)).await;
    assert_eq!(first, ["t01", "t02", "t03"]);
    // Between the pages: one task before the cursor, one after, and one that leaves the list.
    write(&store, |tx| {
        insert(tx, "t00", "i1", None)?;
        insert(tx, "t035", "i1", None)?;
        let mut stopped = tx.task("c", "t04")?.expect("t04 is stored");
        stopped.desired_status = TaskStatus::Stopped;
        tx.put(&stopped)
    })
    .await;
    let second = read(&store, |tx| tx.list_tasks("c", &running(), Some("t03"), 3)).await;
    assert_eq!(second, ["t035", "t05", "t06"]);
}

async fn what_tasks_hold_is_kept_beside_them(store: Arc<dyn Store>) {
    let mut usage = Usage::default();
    usage.place(&need(), "family:f", TaskStatus::Pending);
    usage.place(&need(), "family:f", TaskStatus::Pending);
    let stored = usage.clone();
    write(&store, move |tx| {
        tx.put(&instance("i1"))?;
        insert(tx, "t1", "i1", Some("token"))?;
        insert(tx, "t2", "i1", None)?;
        tx.put_usage("c", "i1", &stored)
    })
    .await;
    let (load, usage_back, reservation, by_token, by_attachment) = read(&store, |tx| {
        Ok((
            tx.instance_load("c", "i1")?,
            tx.usage("c", "i1")?,
            tx.reservation("c", "t1")?,
            tx.tasks_by_client_token("c", "token")?,
            tx.task_with_attachment("c", "eni-t2")?,
        ))
    })
    .await;
    assert_eq!((load.cpu, load.memory, load.pending, load.running), (512, 1024, 2, 0));
    assert!(load.tcp_ports.contains(&8080));
    assert_eq!(usage_back, usage);
    assert_eq!(reservation, need());
    assert_eq!(by_token.len(), 1);
    assert_eq!(by_token[0].0.id(), "t1");
    assert_eq!(by_token[0].1.as_deref(), Some("fingerprint"));
    assert_eq!(by_attachment.map(|t| t.id().to_owned()).as_deref(), Some("t2"));
    usage.transition(&need(), "family:f", TaskStatus::Pending, TaskStatus::Running);
    usage.transition(&need(), "family:f", TaskStatus::Pending, TaskStatus::Stopped);
    let stored = usage.clone();
    write(&store, move |tx| {
        let mut t1 = tx.task("c", "t1")?.expect("t1");
        t1.last_status = TaskStatus::Running;
        tx.put(&t1)?;
        let mut t2 = tx.task("c", "t2")?.expect("t2");
        t2.last_status = TaskStatus::Stopped;
        t2.desired_status = TaskStatus::Stopped;
        t2.stopped_at = Some(5.0);
        tx.put(&t2)?;
        tx.put_usage("c", "i1", &stored)
    })
    .await;
    let (load, loads, held, reservation) = read(&store, |tx| {
        Ok((
            tx.instance_load("c", "i1")?,
            tx.cluster_loads("c")?,
            tx.instance_tasks("c", "i1")?,
            tx.reservation("c", "t2")?,
        ))
    })
    .await;
    assert_eq!((load.cpu, load.memory, load.pending, load.running), (256, 512, 0, 1));
    assert_eq!(loads.get("i1"), Some(&load));
    assert_eq!(held.iter().map(|(t, _)| t.id()).collect::<Vec<_>>(), ["t1"]);
    assert_eq!(reservation, need(), "a put keeps the store's own columns");
}

async fn deliveries_are_acknowledged_once_and_never_backwards(store: Arc<dyn Store>) {
    write(&store, |tx| {
        tx.put(&instance("i1"))?;
        insert(tx, "t1", "i1", None)
    })
    .await;
    let delivered = |store: Arc<dyn Store>| async move { read(&store, |tx| tx.instance_tasks("c", "i1")).await[0].1 };
    assert_eq!(delivered(store.clone()).await, None);
    write(&store, |tx| tx.set_delivered("c", "t1", TaskStatus::Stopped)).await;
    write(&store, |tx| tx.set_delivered("c", "t1", TaskStatus::Running)).await;
    assert_eq!(
        delivered(store.clone()).await,
        Some(TaskStatus::Stopped),
        "a late RUNNING changes nothing"
    );
}

async fn event_numbers_are_never_reused_and_never_seen_out_of_order(store: Arc<dyn Store>) {
    for i in 0..3 {
        write(&store, move |tx| {
            tx.append_event("c", "ECS Task State Change", 10.0, &format!("{{\"n\": {i}}}"), None)
        })
        .await;
    }
    let page = events(&store, 0, 10, false).await;
    let seqs: Vec<i64> = page.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs.len(), 3);
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert_eq!(page.last_seq, seqs[2]);
    // Swept numbers are not given out again.
    store.sweep(1e12, 0.0).await.unwrap();
    write(&store, |tx| {
        tx.append_event("c", "ECS Task State Change", 20.0, "{}", None)
    })
    .await;
    let after_sweep = events(&store, 0, 10, false).await;
    assert_eq!(after_sweep.events.len(), 1);
    assert!(after_sweep.events[0].seq > seqs[2]);

    // Writers and a reader at once: the reader sees every event exactly once, in order.
    let start = after_sweep.events[0].seq;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                // Each on a cluster of its own: their groups commit at once where they can.
                let cluster = format!("c{w}");
                for i in 0..25 {
                    let cluster = cluster.clone();
                    write_in(&store, &cluster.clone(), move |tx| {
                        tx.append_event(
                            &cluster,
                            "ECS Task State Change",
                            30.0,
                            &format!("{{\"w\": {w}, \"i\": {i}}}"),
                            None,
                        )
                    })
                    .await;
                }
            })
        })
        .collect();
    read_every_event_in_order(&store, start, 100, 7).await;
    for writer in writers {
        writer.await.unwrap();
    }
}

/// Reads `count` events after `start` in pages of `page`, while they are being written: each
/// is the one after the last, none skipped or repeated.
async fn read_every_event_in_order(store: &Arc<dyn Store>, start: i64, count: usize, page: usize) {
    let (mut cursor, mut seen) = (start, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "saw only {seen} of {count} events"
        );
        let page = events(store, cursor, page, false).await;
        for event in &page.events {
            assert_eq!(event.seq, cursor + 1, "an event was skipped or repeated");
            cursor = event.seq;
            seen += 1;
        }
        if page.events.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn notices_travel_with_their_events(store: Arc<dyn Store>) {
    write(&store, |tx| {
        tx.append_event("c", "ECS Task State Change", 1.0, "{\"a\": 1}", None)?;
        tx.append_event("c", "ECS Task State Change", 1.0, "{\"b\": 2}", Some("tasks arn:i"))?;
        tx.append_event(
            "c",
            "ECS Container Instance State Change",
            1.0,
            "{}",
            Some("instance arn:i"),
        )
    })
    .await;
    let all = events(&store, 0, 10, false).await;
    assert_eq!(all.events.len(), 3);
    assert_eq!(all.events[0].notice, None);
    let noticed = events(&store, 0, 10, true).await;
    let notices: Vec<_> = noticed
        .events
        .iter()
        .map(|e| e.notice.as_deref().unwrap_or_default())
        .collect();
    assert_eq!(notices, ["tasks arn:i", "instance arn:i"]);
    assert_eq!(
        noticed.last_seq, all.last_seq,
        "a filtered page still says how far it read"
    );
}

async fn events_are_found_by_the_resource_they_are_about(store: Arc<dyn Store>) {
    // Names with the characters LIKE would take for wildcards match only themselves.
    let body = |arn: &str| json!({"resources": [arn], "detail": {"n": arn}}).to_string();
    write(&store, move |tx| {
        for arn in ["arn:t/a_1", "arn:t/aX1", "arn:t/a%1", "arn:t/a_10"] {
            tx.append_event("c", "ECS Task State Change", 1.0, &body(arn), None)?;
        }
        Ok(())
    })
    .await;
    for (arn, expected) in [("arn:t/a_1", 1), ("arn:t/a%1", 1), ("arn:t/a", 0), ("arn:t/a_10", 1)] {
        let query = super::EventQuery {
            limit: 10,
            resource: Some(arn.into()),
            ..Default::default()
        };
        let page = store.events(query).await.unwrap();
        assert_eq!(page.events.len(), expected, "{arn}");
        assert!(page.events.iter().all(|e| e.body.contains(&format!("\"n\":\"{arn}\""))));
    }
}

async fn console_sessions_last_until_they_expire(store: Arc<dyn Store>) {
    let session = |id: &str, expires_at: f64| ConsoleSession {
        id: id.into(),
        access_key_id: "AKIA".into(),
        created_at: 1.0,
        expires_at,
        csrf_token: "t".into(),
    };
    let (lapsed, live) = (session("lapsed", 10.0), session("live", crate::domain::now() + 3600.0));
    let stored = (lapsed.clone(), live.clone());
    write(&store, move |tx| {
        tx.put(&stored.0)?;
        tx.put(&stored.1)
    })
    .await;
    store.sweep(0.0, 0.0).await.unwrap();
    let found = read(&store, |tx| {
        Ok((
            tx.get::<ConsoleSession>(&["lapsed".into()])?,
            tx.get::<ConsoleSession>(&["live".into()])?,
        ))
    })
    .await;
    assert_eq!(found, (None, Some(live)));
}

async fn cursors_keep_their_position(store: Arc<dyn Store>) {
    assert_eq!(store.cursor("hook".into()).await.unwrap(), 0);
    store.set_cursor("hook".into(), 7).await.unwrap();
    store.set_cursor("other".into(), 1).await.unwrap();
    assert_eq!(store.cursor("hook".into()).await.unwrap(), 7);
    store.set_cursor("hook".into(), 9).await.unwrap();
    assert_eq!(store.cursor("hook".into()).await.unwrap(), 9);
}

async fn sweeps_remove_only_what_expired(store: Arc<dyn Store>) {
    write(&store, |tx| {
        tx.put(&instance("i1"))?;
        for id in ["old", "recent", "live"] {
            insert(tx, id, "i1", None)?;
        }
        for (id, at) in [("old", 100.0), ("recent", 300.0)] {
            let mut t = tx.task("c", id)?.expect("stored");
            t.last_status = TaskStatus::Stopped;
            t.desired_status = TaskStatus::Stopped;
            t.stopped_at = Some(at);
            tx.put(&t)?;
        }
        tx.append_event("c", "ECS Task State Change", 100.0, "{\"old\": true}", None)?;
        tx.append_event("c", "ECS Task State Change", 300.0, "{\"old\": false}", None)
    })
    .await;
    let swept = store.sweep(200.0, 200.0).await.unwrap();
    assert_eq!((swept.events, swept.tasks), (1, 1));
    let (old, recent, live, attachment) = read(&store, |tx| {
        Ok((
            tx.task("c", "old")?,
            tx.task("c", "recent")?,
            tx.task("c", "live")?,
            tx.task_with_attachment("c", "eni-old")?,
        ))
    })
    .await;
    assert!(old.is_none() && attachment.is_none());
    assert!(recent.is_some() && live.is_some());
    let events = events(&store, 0, 10, false).await;
    assert_eq!(events.events.len(), 1);
    assert!(events.events[0].body.contains("false"));
}

async fn a_domain_abort_rolls_back_its_writes_and_only_its_own(store: Arc<dyn Store>) {
    #[derive(Debug, PartialEq)]
    enum Outcome {
        Refused(&'static str),
        Failed,
    }
    impl From<StoreError> for Outcome {
        fn from(_: StoreError) -> Self {
            Outcome::Failed
        }
    }
    let writes: Vec<_> = (0..10)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(&scope(), move |tx| {
                        tx.put(&cluster(&format!("c{i}")))?;
                        tx.append_event(&format!("c{i}"), "ECS Task State Change", 1.0, "{}", None)?;
                        if i % 2 == 1 {
                            return Err(Outcome::Refused("odd"));
                        }
                        Ok(())
                    })
                    .await
            })
        })
        .collect();
    for (i, w) in writes.into_iter().enumerate() {
        let outcome = w.await.unwrap();
        if i % 2 == 1 {
            assert_eq!(outcome, Err(Outcome::Refused("odd")), "the abort comes back unchanged");
        } else {
            assert_eq!(outcome, Ok(()));
        }
    }
    let names: Vec<String> = read(&store, |tx| tx.list_clusters(None, 100))
        .await
        .into_iter()
        .map(|c| c.cluster_name)
        .collect();
    assert_eq!(names, ["c0", "c2", "c4", "c6", "c8"]);
    let events = events(&store, 0, 100, false).await;
    assert_eq!(events.events.len(), 5, "the aborted writes' events are gone too");
    let seqs: Vec<i64> = events.events.iter().map(|e| e.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "the aborted writes' numbers are given out again: {seqs:?}"
    );
}

async fn concurrent_writers_lose_no_update(store: Arc<dyn Store>) {
    write(&store, |tx| tx.put(&instance("i1"))).await;
    let stores = vec![store.clone()];
    writers_lose_no_update(&stores).await;
}

/// Writers of the whole scope and of its cluster `c`, through each of `stores`, each reading
/// an instance and writing it back changed: no change is lost.
async fn writers_lose_no_update(stores: &[Arc<dyn Store>]) {
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = stores[w % stores.len()].clone();
            tokio::spawn(async move {
                let mut taken = Vec::new();
                for _ in 0..10 {
                    // Half write back as `put`, half as `update` (sent with what follows).
                    let bump = move |tx: &mut Tx<'_>| {
                        let stored = tx.container_instance("c", "i1")?.expect("stored");
                        let mut record = stored.clone();
                        record.version += 1;
                        match w % 4 < 2 {
                            true => tx.put(&record)?,
                            false => tx.update(&stored, &record)?,
                        }
                        Ok(record.version)
                    };
                    taken.push(match w % 2 {
                        0 => write(&store, bump).await,
                        _ => write_in(&store, "c", bump).await,
                    });
                }
                taken
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in writers {
        all.extend(w.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (2..=81).collect::<Vec<i64>>(), "every version once, none lost");
}

async fn an_update_is_seen_by_what_follows_and_undone_with_its_write(store: Arc<dyn Store>) {
    write(&store, |tx| tx.put(&instance("i1"))).await;
    let version = |v: i64| {
        let mut record = instance("i1");
        record.version = v;
        record
    };
    let seen = write(&store, move |tx| {
        tx.update(&instance("i1"), &version(2))?;
        Ok(tx.container_instance("c", "i1")?.map(|r| r.version))
    })
    .await;
    assert_eq!(seen, Some(2), "the write's next statement sees its update");
    // A changed column is rewritten with the document; one left as it was keeps its value.
    let draining = move |v: i64| {
        let mut record = version(v);
        record.status = crate::domain::status::ContainerInstanceStatus::Draining;
        record
    };
    write(&store, move |tx| tx.update(&version(2), &draining(3))).await;
    write(&store, move |tx| tx.update(&draining(3), &draining(4))).await;
    let listed = read(&store, |tx| {
        tx.list_container_instances(
            "c",
            Some(crate::domain::status::ContainerInstanceStatus::Draining),
            None,
            10,
        )
    })
    .await;
    assert_eq!(
        listed.iter().map(|r| r.version).collect::<Vec<_>>(),
        [4],
        "found by its new status"
    );
    write(&store, move |tx| tx.update(&draining(4), &version(2))).await;
    let aborted: Result<(), StoreError> = store
        .write(&scope(), move |tx| {
            tx.update(&version(2), &version(3))?;
            Err(StoreError::Missing("abort".into()))
        })
        .await;
    assert!(aborted.is_err());
    let stored = read(&store, |tx| tx.container_instance("c", "i1")).await;
    assert_eq!(
        stored.map(|r| r.version),
        Some(2),
        "an aborted write's update is undone"
    );
}

/// How a write of the tests below ends when it does not commit: refused by its own closure, or
/// failed in the store.
#[derive(Debug)]
enum Refusal {
    Refused,
    Failed(StoreError),
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Refusal::Failed(e)
    }
}

async fn what_a_write_reads_ahead_is_what_it_would_read(store: Arc<dyn Store>) {
    write(&store, |tx| tx.put(&instance("i1"))).await;
    // Writes of one cluster that say they read `i1` (stored) and `i2` (not yet): each bumps
    // `i1`, and the first to find `i2` missing stores it; every third aborts after its changes.
    // Each must read what the writes committed before it (and earlier in its group) left.
    let writers: Vec<_> = (0..48)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let ahead = ["i1", "i2"].map(|id| ReadAhead::record::<ContainerInstance>(&scope(), &["c", id]));
                store
                    .write_in_reading(&scope(), "c", ahead.to_vec(), move |tx| {
                        let stored = tx.container_instance("c", "i1")?.expect("stored");
                        let mut record = stored.clone();
                        record.version += 1;
                        tx.update(&stored, &record)?;
                        let made = tx.container_instance("c", "i2")?.is_none();
                        if made {
                            tx.put(&instance("i2"))?;
                        }
                        if w % 3 == 2 {
                            return Err(Refusal::Refused);
                        }
                        Ok((record.version, made))
                    })
                    .await
            })
        })
        .collect();
    let mut versions = Vec::new();
    let mut made = 0;
    for (w, writer) in writers.into_iter().enumerate() {
        match writer.await.unwrap() {
            Ok((version, m)) => {
                versions.push(version);
                made += usize::from(m);
            }
            Err(Refusal::Refused) => assert_eq!(w % 3, 2),
            Err(Refusal::Failed(e)) => panic!("a write failed: {e}"),
        }
    }
    versions.sort_unstable();
    assert_eq!(
        versions,
        (2..=33).collect::<Vec<i64>>(),
        "every kept write saw the last kept"
    );
    assert_eq!(made, 1, "one kept write found i2 missing");
    let stored = read(&store, |tx| tx.container_instance("c", "i1")).await;
    assert_eq!(stored.map(|r| r.version), Some(33));
}

async fn what_a_write_read_of_a_table_is_forgotten_when_the_table_changes(store: Arc<dyn Store>) {
    write(&store, |tx| tx.put(&instance("i0"))).await;
    // Writes of one cluster that list its ACTIVE instances; every second one then registers
    // another, and every third aborts after that. Whatever order they commit in, each must have
    // seen every instance a write kept before it added, and none an aborted write added.
    let writers: Vec<_> = (0..48)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let added = format!("i{}", w + 1);
                let result = store
                    .write_in(&scope(), "c", move |tx| {
                        let (listed, _) =
                            tx.instances_and_loads("c", crate::domain::status::ContainerInstanceStatus::Active)?;
                        let seen: std::collections::BTreeSet<String> = listed
                            .iter()
                            .map(|i| {
                                i.container_instance_arn
                                    .rsplit('/')
                                    .next()
                                    .unwrap_or_default()
                                    .to_owned()
                            })
                            .collect();
                        let adds = w % 2 == 0;
                        if adds {
                            tx.put(&instance(&format!("i{}", w + 1)))?;
                        }
                        if w % 3 == 2 {
                            return Err(Refusal::Refused);
                        }
                        Ok((seen, adds))
                    })
                    .await;
                (added, result)
            })
        })
        .collect();
    let (mut kept, mut aborted) = (Vec::new(), Vec::new());
    for writer in writers {
        match writer.await.unwrap() {
            (added, Ok((seen, adds))) => kept.push((seen, adds.then_some(added))),
            (added, Err(Refusal::Refused)) => aborted.push(added),
            (_, Err(Refusal::Failed(e))) => panic!("a write failed: {e}"),
        }
    }
    for (seen, _) in &kept {
        assert!(
            aborted.iter().all(|a| !seen.contains(a)),
            "an aborted write's instance was seen"
        );
    }
    let after = |(seen, added): &(std::collections::BTreeSet<String>, Option<String>)| {
        let mut all = seen.clone();
        all.extend(added.clone());
        all
    };
    for a in &kept {
        for b in &kept {
            assert!(
                after(a).is_subset(&b.0) || after(b).is_subset(&a.0) || std::ptr::eq(a, b),
                "two writes saw each other's changes in no order: {a:?} {b:?}"
            );
        }
    }
}

async fn a_write_bound_to_a_cluster_reaches_nothing_else(store: Arc<dyn Store>) {
    let unheld = |r: Result<(), StoreError>| matches!(r, Err(StoreError::Unheld { .. }));
    let bound = |f: fn(&mut Tx<'_>) -> Result<(), StoreError>| {
        let store = store.clone();
        async move { store.write_in(&scope(), "c", f).await }
    };
    assert!(
        unheld(bound(|tx| tx.task("d", "t1").map(drop)).await),
        "another cluster's record"
    );
    assert!(unheld(bound(|tx| tx.put_usage("d", "i1", &Usage::default())).await));
    assert!(
        unheld(bound(|tx| tx.list_clusters(None, 10).map(drop)).await),
        "every cluster"
    );
    assert!(
        unheld(bound(|tx| tx.put(&cluster("d"))).await),
        "another cluster itself"
    );
    assert!(
        unheld(bound(|tx| tx.delete::<AccountSetting>(&["root".into(), "x".into()]).map(drop)).await),
        "a change to the scope's own"
    );
    // Its own cluster, and reads of the scope's own, it reaches.
    bound(|tx| {
        tx.put(&cluster("c"))?;
        tx.put(&instance("i1"))?;
        tx.latest_task_definition("f")?;
        tx.append_event("c", "ECS Task State Change", 1.0, "{}", None)
    })
    .await
    .expect("the write commits");
    assert_eq!(read(&store, |tx| tx.cluster("c")).await, Some(cluster("c")));
    assert_eq!(
        read(&store, |tx| tx.container_instance("c", "i1")).await,
        Some(instance("i1"))
    );
}

async fn connections_of_a_lapsed_lease_are_found(store: Arc<dyn Store>) {
    write(&store, |tx| {
        tx.put(&instance("i1"))?;
        tx.put(&instance("i2"))?;
        tx.set_agent_holder("c", "i1", Some("alive"))?;
        tx.set_agent_holder("c", "i2", Some("dead"))
    })
    .await;
    store
        .renew_lease("alive".into(), Duration::from_secs(60))
        .await
        .unwrap();
    store.renew_lease("dead".into(), Duration::ZERO).await.unwrap();
    let lapsed = store.lapsed_agents().await.unwrap();
    assert_eq!(lapsed.len(), 1, "{lapsed:?}");
    assert_eq!((lapsed[0].id.as_str(), lapsed[0].process.as_str()), ("i2", "dead"));
    assert_eq!(lapsed[0].scope, scope());
    assert_eq!(
        read(&store, |tx| tx.agent_holder("c", "i1")).await.as_deref(),
        Some("alive")
    );
    store.end_lease("alive".into()).await.unwrap();
    write(&store, |tx| tx.set_agent_holder("c", "i2", None)).await;
    let lapsed = store.lapsed_agents().await.unwrap();
    assert_eq!(lapsed.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(), ["i1"]);
}

/// Each test, once per backend.
macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let dir = tempfile::tempdir().unwrap();
                    let path = dir.path().join("conformance.sqlite3");
                    let store: std::sync::Arc<dyn super::Store> =
                        std::sync::Arc::new(super::super::SqliteStore::open(&path).unwrap());
                    super::$test(store.clone()).await;
                    tokio::task::spawn_blocking(move || store.close()).await.unwrap();
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::on_postgres(stringify!($test), |store| async move { super::$test(store).await }).await;
                }
            )*
        }
    };
}

conformance!(
    records_round_trip_and_list_in_key_order,
    records_are_deleted_by_key_and_only_theirs,
    task_definitions_keep_their_revisions,
    pages_stay_valid_while_records_come_and_go,
    what_tasks_hold_is_kept_beside_them,
    deliveries_are_acknowledged_once_and_never_backwards,
    event_numbers_are_never_reused_and_never_seen_out_of_order,
    notices_travel_with_their_events,
    events_are_found_by_the_resource_they_are_about,
    console_sessions_last_until_they_expire,
    cursors_keep_their_position,
    sweeps_remove_only_what_expired,
    a_domain_abort_rolls_back_its_writes_and_only_its_own,
    concurrent_writers_lose_no_update,
    a_write_bound_to_a_cluster_reaches_nothing_else,
    an_update_is_seen_by_what_follows_and_undone_with_its_write,
    what_a_write_reads_ahead_is_what_it_would_read,
    what_a_write_read_of_a_table_is_forgotten_when_the_table_changes,
    connections_of_a_lapsed_lease_are_found,
);

/// Runs `test` on a PostgreSQL database of its own, made for this process and test and dropped
/// afterwards, when `ECSD_TEST_POSTGRES` names a database to connect to.
async fn on_postgres<F, Fut>(name: &str, test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    shared_postgres(name, 1, |mut stores| test(stores.remove(0))).await;
}

/// Runs `test` with `n` stores on one PostgreSQL database, as `n` processes sharing it would
/// have, as [`on_postgres`] does.
async fn shared_postgres<F, Fut>(name: &str, n: usize, test: F)
where
    F: FnOnce(Vec<Arc<dyn Store>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let Ok(admin_url) = std::env::var("ECSD_TEST_POSTGRES") else {
        eprintln!("ECSD_TEST_POSTGRES is not set: {name} runs on SQLite only");
        return;
    };
    let (admin, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL answers at ECSD_TEST_POSTGRES");
    tokio::spawn(connection);
    // A short, fixed-length name under the run's prefix: PostgreSQL cuts names at 63 bytes.
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (std::process::id(), name).hash(&mut hasher);
    let prefix = std::env::var("ECSD_TEST_DB_PREFIX").unwrap_or_else(|_| "ecsd_test".into());
    let database = format!("{prefix}_c_{:016x}", hasher.finish());
    for statement in [
        format!("DROP DATABASE IF EXISTS {database}"),
        format!("CREATE DATABASE {database}"),
    ] {
        admin
            .batch_execute(&statement)
            .await
            .expect("the test database is made");
    }
    let base = admin_url.rsplit_once('/').map_or(admin_url.as_str(), |(base, _)| base);
    let mut stores: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..n {
        let store = super::PostgresStore::open(&format!("{base}/{database}"))
            .await
            .expect("the store opens");
        stores.push(Arc::new(store));
    }
    // A panic inside the test still drops the database: the test runs as a task of its own.
    let outcome = tokio::spawn(test(stores.clone())).await;
    drop(stores);
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .await
        .expect("the test database is dropped");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Two processes on one PostgreSQL database: what their writers hold against each other.
mod shared {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_of_two_processes_lose_no_update() {
        shared_postgres("two_lose_no_update", 2, |stores| async move {
            write(&stores[0], |tx| tx.put(&instance("i1"))).await;
            writers_lose_no_update(&stores).await;
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cluster_held_by_one_process_waits_the_other_and_no_other_cluster_does() {
        shared_postgres("two_hold_a_cluster", 2, |stores| async move {
            write(&stores[0], |tx| tx.put(&instance("i1"))).await;
            // The first process reads the instance, and waits before writing it back.
            let (release, held) = std::sync::mpsc::channel::<()>();
            let (started, running) = tokio::sync::oneshot::channel();
            let first = tokio::spawn({
                let store = stores[0].clone();
                async move {
                    write_in(&store, "c", move |tx| {
                        let mut record = tx.container_instance("c", "i1")?.expect("stored");
                        let _ = started.send(());
                        held.recv_timeout(Duration::from_secs(30)).expect("released");
                        record.version += 1;
                        tx.put(&record)
                    })
                    .await
                }
            });
            running.await.unwrap();
            // Another cluster: the second process writes it meanwhile.
            let other = write_in(&stores[1], "d", |tx| tx.put_usage("d", "i9", &Usage::default()));
            tokio::time::timeout(Duration::from_secs(10), other)
                .await
                .expect("a write to another cluster does not wait");
            // The same cluster: it waits for the first process's commit, then sees its change.
            let second = tokio::spawn({
                let store = stores[1].clone();
                async move {
                    write_in(&store, "c", |tx| {
                        let mut record = tx.container_instance("c", "i1")?.expect("stored");
                        record.version += 1;
                        tx.put(&record)?;
                        Ok(record.version)
                    })
                    .await
                }
            });
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(!second.is_finished(), "a write to a held cluster did not wait");
            release.send(()).unwrap();
            first.await.unwrap();
            assert_eq!(second.await.unwrap(), 3, "the second write saw the first's change");
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_of_two_processes_are_numbered_in_commit_order() {
        shared_postgres("two_number_events", 2, |stores| async move {
            let writers: Vec<_> = (0..6)
                .map(|w| {
                    let store = stores[w % 2].clone();
                    tokio::spawn(async move {
                        let cluster = format!("c{w}");
                        for i in 0..30 {
                            let (c, body) = (cluster.clone(), format!("{{\"w\": {w}, \"i\": {i}}}"));
                            write_in(&store, &cluster, move |tx| {
                                tx.append_event(&c, "ECS Task State Change", 1.0, &body, None)
                            })
                            .await;
                        }
                    })
                })
                .collect();
            // Readers of both processes see every event once, in order, none skipped.
            for reader in &stores {
                read_every_event_in_order(reader, 0, 180, 11).await;
            }
            for writer in writers {
                writer.await.unwrap();
            }
        })
        .await;
    }
}
