//! TagResource, UntagResource and ListTagsForResource for clusters, task definitions, container
//! instances, tasks and services, and the tag rules every operation that takes tags applies.

use std::collections::HashSet;

use serde_json::Value;

use super::Ctx;
use crate::domain::records::{Service, Tag};
use crate::domain::status::{ClusterStatus, ServiceStatus};
use crate::error::{ApiError, ErrorCode};
use crate::shapes::{
    ListTagsForResourceRequest, ListTagsForResourceResponse, TagResourceRequest, TagResourceResponse,
    UntagResourceRequest, UntagResourceResponse,
};
use crate::store::{StoreExt, Tx};

const MAX_TAGS: usize = 50;
const MAX_KEY_LEN: usize = 128;
const MAX_VALUE_LEN: usize = 256;

/// ECS's tag rules: at most 50, keys 1–128 characters and unique, values up to 256, and the
/// `aws:` prefix reserved.
pub fn check_tags(tags: &[Tag]) -> Result<(), ApiError> {
    if tags.len() > MAX_TAGS {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid 'tags': a resource can have at most {MAX_TAGS} tags."
        )));
    }
    let mut keys = HashSet::new();
    for (i, tag) in tags.iter().enumerate() {
        let key = tag.key.as_deref().unwrap_or_default();
        if key.is_empty() || key.chars().count() > MAX_KEY_LEN {
            return Err(ApiError::invalid_parameter(format!(
                "Invalid 'tags[{i}].key': it must be 1 to {MAX_KEY_LEN} characters long."
            )));
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(ApiError::invalid_parameter(format!(
                "Invalid 'tags[{i}].key': the aws: prefix is reserved for AWS use."
            )));
        }
        if tag.value.as_ref().is_some_and(|v| v.chars().count() > MAX_VALUE_LEN) {
            return Err(ApiError::invalid_parameter(format!(
                "Invalid 'tags[{i}].value': it must be at most {MAX_VALUE_LEN} characters long."
            )));
        }
        if let Some(c) = key.chars().find(|c| !tag_char(*c)) {
            return Err(ApiError::invalid_parameter(format!(
                "Invalid 'tags[{i}].key': '{}' is not allowed; tags hold letters, numbers, spaces and _.:/=+-@.",
                c.escape_unicode()
            )));
        }
        if let Some(c) = tag.value.as_deref().unwrap_or_default().chars().find(|c| !tag_char(*c)) {
            return Err(ApiError::invalid_parameter(format!(
                "Invalid 'tags[{i}].value': '{}' is not allowed; tags hold letters, numbers, spaces and _.:/=+-@.",
                c.escape_unicode()
            )));
        }
        if !keys.insert(key) {
            return Err(ApiError::invalid_parameter(format!(
                "Invalid 'tags[{i}].key': '{key}' is given twice."
            )));
        }
    }
    Ok(())
}

/// A character the model's tag pattern allows: `[\p{L}\p{Z}\p{N}_.:/=+\-@]`. (Unicode
/// separators are the white space that is not a control character.)
fn tag_char(c: char) -> bool {
    c.is_alphabetic() || c.is_numeric() || (c.is_whitespace() && !c.is_control()) || "_.:/=+-@".contains(c)
}

/// `base` with `added` applied: a key in both takes the value from `added`.
pub fn merge_tags(base: &[Tag], added: &[Tag]) -> Vec<Tag> {
    let mut out: Vec<Tag> = base
        .iter()
        .filter(|t| !added.iter().any(|a| a.key == t.key))
        .cloned()
        .collect();
    out.extend(added.iter().cloned());
    out
}

fn not_found() -> ApiError {
    ApiError::new(
        ErrorCode::ResourceNotFoundException,
        "The specified resource could not be found.",
    )
}

/// A taggable resource named by ARN.
enum Resource {
    Cluster(String),
    TaskDefinition(String, i64),
    ContainerInstance(String, String),
    Task(String, String),
    Service(String, String),
}

fn resolve(tx: &mut Tx<'_>, arn: &str) -> Result<Resource, ApiError> {
    let scope = tx.scope().clone();
    if !arn.starts_with("arn:") {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid 'resourceArn': '{arn}' is not an ARN."
        )));
    }
    if let Some(name) = scope.cluster_name(arn) {
        return Ok(Resource::Cluster(name.to_owned()));
    }
    if let Some((family, Some(revision))) = scope.task_definition_ref(arn) {
        return Ok(Resource::TaskDefinition(family.to_owned(), revision));
    }
    for (kind, make) in [
        (
            "container-instance",
            Resource::ContainerInstance as fn(String, String) -> Resource,
        ),
        ("task", Resource::Task),
        ("service", Resource::Service),
    ] {
        if let Some(r) = scope.resource_id(arn, kind) {
            let cluster = r.cluster.ok_or_else(not_found)?;
            return Ok(make(cluster.to_owned(), r.id.to_owned()));
        }
    }
    Err(not_found())
}

/// Reads the tags of a resource, lets `change` edit them, and stores them back if it did.
fn edit_tags(
    tx: &mut Tx<'_>,
    arn: &str,
    change: impl FnOnce(&mut Vec<Tag>) -> Result<(), ApiError>,
) -> Result<Vec<Tag>, ApiError> {
    let cluster_exists = |tx: &mut Tx<'_>, name: &str| -> Result<(), ApiError> {
        match tx.cluster(name)? {
            Some(c) if c.status == ClusterStatus::Active => Ok(()),
            _ => Err(ApiError::cluster_not_found()),
        }
    };
    match resolve(tx, arn)? {
        Resource::Cluster(name) => {
            let mut cluster = tx
                .cluster(&name)?
                .filter(|c| c.status == ClusterStatus::Active)
                .ok_or_else(ApiError::cluster_not_found)?;
            let mut tags: Vec<Tag> = cluster
                .options
                .get("tags")
                .map(|t| serde_json::from_value(t.clone()))
                .transpose()
                .map_err(crate::store::StoreError::from)?
                .unwrap_or_default();
            let before = tags.clone();
            change(&mut tags)?;
            if tags != before {
                cluster
                    .options
                    .insert("tags".into(), serde_json::to_value(&tags).unwrap_or(Value::Null));
                tx.put(&cluster)?;
            }
            Ok(tags)
        }
        Resource::TaskDefinition(family, revision) => {
            let mut stored = tx.task_definition(&family, revision)?.ok_or_else(not_found)?;
            let before = stored.tags.clone();
            change(&mut stored.tags)?;
            if stored.tags != before {
                tx.put(&stored)?;
            }
            Ok(stored.tags)
        }
        Resource::ContainerInstance(cluster, id) => {
            cluster_exists(tx, &cluster)?;
            let mut instance = tx.container_instance(&cluster, &id)?.ok_or_else(not_found)?;
            let before = instance.tags.clone();
            change(&mut instance.tags)?;
            if instance.tags != before {
                tx.put(&instance)?;
            }
            Ok(instance.tags)
        }
        Resource::Task(cluster, id) => {
            cluster_exists(tx, &cluster)?;
            let mut task = tx.task(&cluster, &id)?.ok_or_else(not_found)?;
            let before = task.tags.clone();
            change(&mut task.tags)?;
            // Tags are not part of a task's state: changing them does not bump its version.
            if task.tags != before {
                tx.put(&task)?;
            }
            Ok(task.tags)
        }
        Resource::Service(cluster, name) => {
            cluster_exists(tx, &cluster)?;
            let mut service = tx
                .get::<Service>(&[cluster.as_str().into(), name.as_str().into()])?
                .filter(|s| s.status != ServiceStatus::Inactive)
                .ok_or_else(not_found)?;
            let mut tags: Vec<Tag> = service
                .options
                .get("tags")
                .map(|t| serde_json::from_value(t.clone()))
                .transpose()
                .map_err(crate::store::StoreError::from)?
                .unwrap_or_default();
            let before = tags.clone();
            change(&mut tags)?;
            if tags != before {
                service
                    .options
                    .insert("tags".into(), serde_json::to_value(&tags).unwrap_or(Value::Null));
                tx.put(&service)?;
            }
            Ok(tags)
        }
    }
}

pub async fn tag_resource(ctx: &Ctx, req: TagResourceRequest) -> Result<TagResourceResponse, ApiError> {
    check_tags(&req.tags)?;
    ctx.store
        .write(&ctx.scope, move |tx| {
            let added = req.tags.clone();
            edit_tags(tx, &req.resource_arn, |tags| {
                *tags = merge_tags(tags, &added);
                check_tags(tags)
            })?;
            Ok(TagResourceResponse {})
        })
        .await
}

pub async fn untag_resource(ctx: &Ctx, req: UntagResourceRequest) -> Result<UntagResourceResponse, ApiError> {
    ctx.store
        .write(&ctx.scope, move |tx| {
            let keys = req.tag_keys.clone();
            edit_tags(tx, &req.resource_arn, |tags| {
                tags.retain(|t| !keys.iter().any(|k| t.key.as_deref() == Some(k.as_str())));
                Ok(())
            })?;
            Ok(UntagResourceResponse {})
        })
        .await
}

pub async fn list_tags_for_resource(
    ctx: &Ctx,
    req: ListTagsForResourceRequest,
) -> Result<ListTagsForResourceResponse, ApiError> {
    // Read through the same path as the edits, with an edit that changes nothing.
    ctx.store
        .read(&ctx.scope, move |tx| {
            let tags = edit_tags(tx, &req.resource_arn, |_| Ok(()))?;
            Ok(ListTagsForResourceResponse { tags: Some(tags) })
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(k: &str, v: &str) -> Tag {
        Tag {
            key: Some(k.into()),
            value: Some(v.into()),
        }
    }

    #[test]
    fn tag_rules() {
        check_tags(&[tag("env", "prod"), tag("team", "")]).unwrap();
        assert!(check_tags(&[tag("aws:owner", "x")]).is_err());
        assert!(check_tags(&[tag("AWS:owner", "x")]).is_err());
        assert!(check_tags(&[tag("", "x")]).is_err());
        assert!(check_tags(&[tag(&"k".repeat(129), "x")]).is_err());
        assert!(check_tags(&[tag("k", &"v".repeat(257))]).is_err());
        assert!(check_tags(&[tag("k", "1"), tag("k", "2")]).is_err());
        let many: Vec<Tag> = (0..51).map(|i| tag(&format!("k{i}"), "v")).collect();
        assert!(check_tags(&many).is_err());
        check_tags(&many[..50]).unwrap();
        check_tags(&[tag("Équipe données", "a.b:c/d=e+f-g@h_1 ٣")]).unwrap();
        for bad in ["nul\u{0}", "bell\u{7}", "tab\t", "semi;colon", "quote\"", "<tag>"] {
            assert!(check_tags(&[tag(bad, "v")]).is_err(), "key {bad:?}");
            assert!(check_tags(&[tag("k", bad)]).is_err(), "value {bad:?}");
        }
    }

    #[test]
    fn merging_replaces_values_of_the_same_key() {
        let merged = merge_tags(&[tag("a", "1"), tag("b", "2")], &[tag("b", "3"), tag("c", "4")]);
        assert_eq!(merged, vec![tag("a", "1"), tag("b", "3"), tag("c", "4")]);
    }
}
