//! Fuzzes the request decoding path (the model check of every operation) and the
//! SubmitTaskStateChange rules: no input may panic, a refused report must leave the task as it
//! was, and an accepted one must never move a status backwards.

#![no_main]

use ecsd::domain::records::Task;
use ecsd::domain::task_change::{apply, TaskStateReport};
use ecsd::model::Model;
use ecsd::ops::Operation;
use libfuzzer_sys::fuzz_target;

fn sample_task() -> Task {
    let container = |name: &str| {
        serde_json::json!({
            "containerArn": format!("arn:aws:ecs:us-east-1:123456789012:container/c/t/{name}"),
            "taskArn": "arn:aws:ecs:us-east-1:123456789012:task/c/t",
            "name": name,
            "lastStatus": "RUNNING",
            "networkBindings": [],
            "networkInterfaces": [],
        })
    };
    serde_json::from_value(serde_json::json!({
        "taskArn": "arn:aws:ecs:us-east-1:123456789012:task/c/t",
        "clusterArn": "arn:aws:ecs:us-east-1:123456789012:cluster/c",
        "taskDefinitionArn": "arn:aws:ecs:us-east-1:123456789012:task-definition/f:1",
        "overrides": {},
        "lastStatus": "RUNNING",
        "desiredStatus": "RUNNING",
        "containers": [container("app"), container("sidecar")],
        "version": 2,
        "createdAt": 1.0,
        "startedAt": 2.0,
        "attachments": [{"id": "eni", "type": "ElasticNetworkInterface", "status": "PRECREATED", "details": []}],
        "tags": [],
        "enableExecuteCommand": false,
    }))
    .expect("the sample task is valid")
}

fuzz_target!(|data: &[u8]| {
    let model = Model::get();
    for operation in Operation::ALL {
        let _ = model.check_input(operation.name(), data);
    }
    let Ok(value) = model.check_input("SubmitTaskStateChange", data) else {
        return;
    };
    let Ok(report) = serde_json::from_value::<TaskStateReport>(value) else {
        return;
    };
    let before = sample_task();
    let mut task = before.clone();
    match apply(&mut task, &report, |name| name == "app", 10.0) {
        Err(_) => assert_eq!(task, before, "a refused report changed the task"),
        Ok(()) => {
            assert!(task.last_status >= before.last_status);
            for (after, was) in task.containers.iter().zip(&before.containers) {
                assert!(after.last_status >= was.last_status);
            }
        }
    }
});
