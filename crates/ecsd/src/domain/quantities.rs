//! The ranges ECS documents for the members of a task definition (and of RunTask overrides)
//! that mean a quantity: CPU units, MiB, ports, limits, sizes, timeouts and percentages. A
//! value outside its range is refused with a `ClientException` naming the member, before
//! anything is stored or placed.

use serde_json::{Map, Value};

use super::placement::{parse_cpu, parse_memory};
use crate::error::ApiError;

/// CPU units of the largest task ECS runs on EC2 (192 vCPUs).
pub const MAX_CPU_UNITS: i64 = 192 * 1024;
/// MiB of the most memory a task or container can ask for: 24 TiB, the largest EC2 instance.
pub const MAX_MEMORY_MIB: i64 = 24 * 1024 * 1024;
/// The least memory Docker gives a container.
pub const MIN_CONTAINER_MEMORY_MIB: i64 = 6;

/// A member's allowed range, inclusive.
struct Range {
    member: &'static str,
    min: i64,
    max: i64,
}

const fn range(member: &'static str, min: i64, max: i64) -> Range {
    Range { member, min, max }
}

/// A container definition's own quantities.
const CONTAINER: [Range; 5] = [
    range("cpu", 0, MAX_CPU_UNITS),
    range("memory", MIN_CONTAINER_MEMORY_MIB, MAX_MEMORY_MIB),
    range("memoryReservation", MIN_CONTAINER_MEMORY_MIB, MAX_MEMORY_MIB),
    range("startTimeout", 0, i32::MAX as i64),
    range("stopTimeout", 0, i32::MAX as i64),
];

/// `healthCheck`: seconds and counts as the API reference bounds them.
const HEALTH_CHECK: [Range; 4] = [
    range("interval", 5, 300),
    range("timeout", 2, 120),
    range("retries", 1, 10),
    range("startPeriod", 0, 300),
];

/// `linuxParameters`: sizes in MiB and the swappiness percentage.
const LINUX_PARAMETERS: [Range; 3] = [
    range("sharedMemorySize", 0, MAX_MEMORY_MIB),
    range("maxSwap", 0, MAX_MEMORY_MIB),
    range("swappiness", 0, 100),
];

fn check(object: &Map<String, Value>, ranges: &[Range], path: &str) -> Result<(), ApiError> {
    for r in ranges {
        let Some(value) = object.get(r.member).and_then(Value::as_i64) else {
            continue;
        };
        if !(r.min..=r.max).contains(&value) {
            return Err(ApiError::client(format!(
                "Invalid '{path}{}': {value} is outside {}..={}.",
                r.member, r.min, r.max
            )));
        }
    }
    Ok(())
}

fn objects(value: Option<&Value>) -> impl Iterator<Item = (usize, &Map<String, Value>)> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .enumerate()
}

/// Task-level `cpu` and `memory` (text, in units or vCPU, MiB or GB).
fn check_task_sizes(object: &Map<String, Value>, path: &str) -> Result<(), ApiError> {
    if let Some(text) = object.get("cpu").and_then(Value::as_str) {
        let units = parse_cpu(text)?;
        if !(1..=MAX_CPU_UNITS).contains(&units) {
            return Err(ApiError::client(format!(
                "Invalid '{path}cpu': '{text}' is outside 1..={MAX_CPU_UNITS} CPU units."
            )));
        }
    }
    if let Some(text) = object.get("memory").and_then(Value::as_str) {
        let mib = parse_memory(text)?;
        if !(MIN_CONTAINER_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&mib) {
            return Err(ApiError::client(format!(
                "Invalid '{path}memory': '{text}' is outside {MIN_CONTAINER_MEMORY_MIB}..={MAX_MEMORY_MIB} MiB."
            )));
        }
    }
    Ok(())
}

/// A container's hard limit may not be below its soft limit.
fn check_soft_below_hard(object: &Map<String, Value>, soft: &str, hard: &str, path: &str) -> Result<(), ApiError> {
    if let (Some(s), Some(h)) = (
        object.get(soft).and_then(Value::as_i64),
        object.get(hard).and_then(Value::as_i64),
    ) {
        if s > h {
            return Err(ApiError::client(format!(
                "Invalid '{path}{soft}': {s} is above '{hard}' ({h})."
            )));
        }
    }
    Ok(())
}

/// Every quantity of a task definition (as RegisterTaskDefinition takes it).
pub fn check_task_definition(definition: &Map<String, Value>) -> Result<(), ApiError> {
    check_task_sizes(definition, "")?;
    if let Some(size) = definition.pointer_in("ephemeralStorage", "sizeInGiB") {
        if !(21..=200).contains(&size) {
            return Err(ApiError::client(format!(
                "Invalid 'ephemeralStorage.sizeInGiB': {size} is outside 21..=200."
            )));
        }
    }
    for (i, container) in objects(definition.get("containerDefinitions")) {
        let path = format!("containerDefinitions[{i}].");
        check(container, &CONTAINER, &path)?;
        check_soft_below_hard(container, "memoryReservation", "memory", &path)?;
        if let Some(health) = container.get("healthCheck").and_then(Value::as_object) {
            check(health, &HEALTH_CHECK, &format!("{path}healthCheck."))?;
        }
        if let Some(linux) = container.get("linuxParameters").and_then(Value::as_object) {
            let linux_path = format!("{path}linuxParameters.");
            check(linux, &LINUX_PARAMETERS, &linux_path)?;
            for (j, tmpfs) in objects(linux.get("tmpfs")) {
                check(
                    tmpfs,
                    &[range("size", 1, MAX_MEMORY_MIB)],
                    &format!("{linux_path}tmpfs[{j}]."),
                )?;
            }
        }
        for (j, ulimit) in objects(container.get("ulimits")) {
            let ulimit_path = format!("{path}ulimits[{j}].");
            check(
                ulimit,
                &[
                    range("softLimit", 0, i32::MAX as i64),
                    range("hardLimit", 0, i32::MAX as i64),
                ],
                &ulimit_path,
            )?;
            check_soft_below_hard(ulimit, "softLimit", "hardLimit", &ulimit_path)?;
        }
        for (j, requirement) in objects(container.get("resourceRequirements")) {
            let is_gpu = requirement.get("type").and_then(Value::as_str) == Some("GPU");
            let value = requirement.get("value").and_then(Value::as_str).unwrap_or_default();
            if is_gpu && value.parse::<u32>().map_or(true, |n| n == 0) {
                return Err(ApiError::client(format!(
                    "Invalid '{path}resourceRequirements[{j}].value': a GPU count is a whole number above 0, not '{value}'."
                )));
            }
        }
    }
    for (i, volume) in objects(definition.get("volumes")) {
        if let Some(port) = volume.pointer_in("efsVolumeConfiguration", "transitEncryptionPort") {
            if !(0..=65535).contains(&port) {
                return Err(ApiError::client(format!(
                    "Invalid 'volumes[{i}].efsVolumeConfiguration.transitEncryptionPort': {port} is not a valid port."
                )));
            }
        }
    }
    Ok(())
}

/// The quantities of RunTask or StartTask `overrides` (a `TaskOverride`).
pub fn check_overrides(overrides: &Value) -> Result<(), ApiError> {
    let Some(overrides) = overrides.as_object() else {
        return Ok(());
    };
    check_task_sizes(overrides, "overrides.")?;
    for (i, container) in objects(overrides.get("containerOverrides")) {
        let path = format!("overrides.containerOverrides[{i}].");
        check(container, &CONTAINER[..3], &path)?;
        check_soft_below_hard(container, "memoryReservation", "memory", &path)?;
    }
    if let Some(size) = overrides.pointer_in("ephemeralStorage", "sizeInGiB") {
        if !(21..=200).contains(&size) {
            return Err(ApiError::client(format!(
                "Invalid 'overrides.ephemeralStorage.sizeInGiB': {size} is outside 21..=200."
            )));
        }
    }
    Ok(())
}

/// `object[outer][inner]` as an integer.
trait PointerIn {
    fn pointer_in(&self, outer: &str, inner: &str) -> Option<i64>;
}

impl PointerIn for Map<String, Value> {
    fn pointer_in(&self, outer: &str, inner: &str) -> Option<i64> {
        self.get(outer)?.get(inner)?.as_i64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn definition(container: Value) -> Map<String, Value> {
        let mut base = json!({"name": "app", "image": "i", "memory": 64});
        base.as_object_mut()
            .unwrap()
            .extend(container.as_object().unwrap().clone());
        json!({"family": "f", "containerDefinitions": [base]})
            .as_object()
            .unwrap()
            .clone()
    }

    fn refused(container: Value) -> String {
        check_task_definition(&definition(container)).unwrap_err().message
    }

    #[test]
    fn negative_and_oversized_quantities_are_refused_naming_the_member() {
        assert!(refused(json!({"memory": -500})).contains("containerDefinitions[0].memory"));
        assert!(refused(json!({"cpu": -5})).contains("containerDefinitions[0].cpu"));
        assert!(refused(json!({"memoryReservation": -1})).contains("memoryReservation"));
        assert!(refused(json!({"memoryReservation": 128})).contains("above 'memory'"));
        assert!(refused(json!({"healthCheck": {"command": ["true"], "interval": 1}})).contains("healthCheck.interval"));
        assert!(refused(json!({"linuxParameters": {"swappiness": 101}})).contains("swappiness"));
        assert!(
            refused(json!({"linuxParameters": {"tmpfs": [{"containerPath": "/t", "size": 0}]}}))
                .contains("tmpfs[0].size")
        );
        assert!(
            refused(json!({"ulimits": [{"name": "nofile", "softLimit": 10, "hardLimit": 5}]})).contains("softLimit")
        );
        assert!(
            refused(json!({"ulimits": [{"name": "nofile", "softLimit": -1, "hardLimit": 5}]}))
                .contains("ulimits[0].softLimit")
        );
        assert!(refused(json!({"stopTimeout": -3})).contains("stopTimeout"));
        assert!(
            refused(json!({"resourceRequirements": [{"type": "GPU", "value": "-1"}]})).contains("resourceRequirements")
        );
        let mut task = definition(json!({}));
        task.insert("cpu".into(), "-2048".into());
        assert!(check_task_definition(&task).unwrap_err().message.contains("'cpu'"));
        task.insert("cpu".into(), "0".into());
        assert!(check_task_definition(&task).is_err());
        task.insert("cpu".into(), "1 vCPU".into());
        task.insert("memory".into(), "2 GB".into());
        check_task_definition(&task).unwrap();
        task.insert("ephemeralStorage".into(), json!({"sizeInGiB": 5}));
        assert!(check_task_definition(&task)
            .unwrap_err()
            .message
            .contains("ephemeralStorage"));
    }

    #[test]
    fn quantities_within_their_ranges_pass() {
        check_task_definition(&definition(json!({
            "cpu": 256, "memoryReservation": 32, "stopTimeout": 30,
            "healthCheck": {"command": ["true"], "interval": 30, "timeout": 5, "retries": 3, "startPeriod": 0},
            "linuxParameters": {"swappiness": 60, "maxSwap": 0, "tmpfs": [{"containerPath": "/t", "size": 64}]},
            "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 4096}],
            "resourceRequirements": [{"type": "GPU", "value": "1"}]
        })))
        .unwrap();
    }

    #[test]
    fn overrides_are_checked_too() {
        let bad = json!({"containerOverrides": [{"name": "app", "memory": -500}]});
        assert!(check_overrides(&bad)
            .unwrap_err()
            .message
            .contains("overrides.containerOverrides[0].memory"));
        assert!(check_overrides(&json!({"cpu": "-1"})).is_err());
        check_overrides(&json!({"containerOverrides": [{"name": "app", "cpu": 128, "memory": 256}]})).unwrap();
    }
}
