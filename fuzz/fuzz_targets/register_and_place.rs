//! Fuzzes task-definition registration and placement: whatever definition arrives, checked
//! (what RegisterTaskDefinition accepts) or not (what a store written before the checks may
//! hold), placing its tasks on an instance never leaves the instance's remaining CPU or memory
//! below zero or above its total, and a task goes only where it fits.

#![no_main]

use ecsd::domain::placement::{misfit, remaining_resources, reservation, Reservation, Usage};
use ecsd::domain::quantities::check_task_definition;
use ecsd::domain::records::{ContainerInstance, Resource, TaskDefinitionSpec};
use ecsd::domain::status::TaskStatus;
use ecsd::model::Model;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

const CPU: i64 = 2048;
const MEMORY: i64 = 1000;

fn instance() -> ContainerInstance {
    serde_json::from_value(json!({
        "containerInstanceArn": "arn:aws:ecs:us-east-1:123456789012:container-instance/c/i",
        "version": 1,
        "registeredResources": [
            {"name": "CPU", "type": "INTEGER", "integerValue": CPU},
            {"name": "MEMORY", "type": "INTEGER", "integerValue": MEMORY},
        ],
        "status": "ACTIVE",
        "agentConnected": false,
        "attributes": [],
        "registeredAt": 1.0,
        "attachments": [],
        "tags": [],
    }))
    .expect("the sample instance is valid")
}

fn value_of(resources: &[Resource], name: &str) -> i64 {
    resources
        .iter()
        .find(|r| r.name.as_deref() == Some(name))
        .and_then(|r| r.integer_value)
        .map_or(0, i64::from)
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = Model::get().check_input("RegisterTaskDefinition", data) else {
        return;
    };
    let Some(definition) = input.as_object() else {
        return;
    };
    // Whether or not the checks accept it: a store written before them may hold it.
    let _accepted = check_task_definition(definition).is_ok();
    let Ok(spec) = serde_json::from_value::<TaskDefinitionSpec>(Value::Object(definition.clone())) else {
        return;
    };
    let Ok(need) = reservation(&spec, &json!({})) else {
        return;
    };
    assert!(need.cpu >= 0 && need.memory >= 0, "a task never needs less than nothing: {need:?}");
    let instance = instance();
    let mut usage = Usage::default();
    // Tasks of this definition, interleaved with a well-behaved one, until nothing fits.
    let fixed = Reservation {
        cpu: 128,
        memory: 100,
        ..Reservation::default()
    };
    for round in 0..16 {
        let r = if round % 2 == 0 { &need } else { &fixed };
        if misfit(&instance, &usage.load(), r).is_none() {
            usage.place(r, "g", TaskStatus::Pending);
        }
        let load = usage.load();
        assert!(load.cpu <= CPU && load.memory <= MEMORY, "placement went past the instance: {load:?}");
        let left = remaining_resources(&instance.registered_resources, &load);
        let (cpu, memory) = (value_of(&left, "CPU"), value_of(&left, "MEMORY"));
        assert!((0..=CPU).contains(&cpu), "remaining CPU {cpu}");
        assert!((0..=MEMORY).contains(&memory), "remaining memory {memory}");
    }
});
