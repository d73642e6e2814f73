//! TagResource, UntagResource and ListTagsForResource for clusters, task definitions, container
//! instances, tasks and services, and the tag rules every operation that takes tags applies.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::Ctx;
use crate::domain::records::{Service, Tag};
use crate::domain::status::{ClusterStatus, ServiceStatus};
use crate::error::{ApiError, ErrorCode};
use crate::shapes::{
    ListTagsForResourceRequest, ListTagsForResourceResponse, TagResourceRequest, TagResourceResponse,
    UntagResourceRequest, UntagResourceResponse,
};
use crate::store::{Record, StoreExt, Tx};

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

/// Lets `change` edit a record's tags, and stores the record if they changed.
fn edit_record<R: Record>(
    tx: &mut Tx<'_>,
    mut record: R,
    tags: fn(&mut R) -> &mut Vec<Tag>,
    change: impl FnOnce(&mut Vec<Tag>) -> Result<(), ApiError>,
) -> Result<Vec<Tag>, ApiError> {
    let before = tags(&mut record).clone();
    change(tags(&mut record))?;
    let after = tags(&mut record).clone();
    if after != before {
        tx.put(&record)?;
    }
    Ok(after)
}

/// [`edit_record`] for records that keep their tags among members stored as sent (clusters,
/// services).
fn edit_options<R: Record>(
    tx: &mut Tx<'_>,
    mut record: R,
    options: fn(&mut R) -> &mut Map<String, Value>,
    change: impl FnOnce(&mut Vec<Tag>) -> Result<(), ApiError>,
) -> Result<Vec<Tag>, ApiError> {
    let mut tags: Vec<Tag> = options(&mut record)
        .get("tags")
        .map(|t| serde_json::from_value(t.clone()))
        .transpose()
        .map_err(crate::store::StoreError::from)?
        .unwrap_or_default();
    let before = tags.clone();
    change(&mut tags)?;
    if tags != before {
        options(&mut record).insert("tags".into(), serde_json::to_value(&tags).unwrap_or(Value::Null));
        tx.put(&record)?;
    }
    Ok(tags)
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
            let cluster = tx
                .cluster(&name)?
                .filter(|c| c.status == ClusterStatus::Active)
                .ok_or_else(ApiError::cluster_not_found)?;
            edit_options(tx, cluster, |c| &mut c.options, change)
        }
        Resource::TaskDefinition(family, revision) => {
            let stored = tx.task_definition(&family, revision)?.ok_or_else(not_found)?;
            edit_record(tx, stored, |d| &mut d.tags, change)
        }
        Resource::ContainerInstance(cluster, id) => {
            cluster_exists(tx, &cluster)?;
            let instance = tx.container_instance(&cluster, &id)?.ok_or_else(not_found)?;
            edit_record(tx, instance, |i| &mut i.tags, change)
        }
        Resource::Task(cluster, id) => {
            cluster_exists(tx, &cluster)?;
            // Tags are not part of a task's state: changing them does not bump its version.
            let task = tx.task(&cluster, &id)?.ok_or_else(not_found)?;
            edit_record(tx, task, |t| &mut t.tags, change)
        }
        Resource::Service(cluster, name) => {
            cluster_exists(tx, &cluster)?;
            let service = tx
                .get::<Service>(&[cluster.as_str().into(), name.as_str().into()])?
                .filter(|s| s.status != ServiceStatus::Inactive)
                .ok_or_else(not_found)?;
            edit_options(tx, service, |s| &mut s.options, change)
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
