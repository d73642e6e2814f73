//! ARNs and resource references. Callers may name a resource by short name, id or full ARN;
//! an ARN of another account or region names nothing here.

/// The account and region every resource lives in. Nothing crosses from one scope to another.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scope {
    pub account: String,
    pub region: String,
}

impl Scope {
    pub fn new(account: impl Into<String>, region: impl Into<String>) -> Self {
        Scope {
            account: account.into(),
            region: region.into(),
        }
    }

    fn partition(&self) -> &'static str {
        if self.region.starts_with("cn-") {
            "aws-cn"
        } else if self.region.starts_with("us-gov-") {
            "aws-us-gov"
        } else {
            "aws"
        }
    }

    fn prefix(&self) -> String {
        format!("arn:{}:ecs:{}:{}:", self.partition(), self.region, self.account)
    }

    pub fn cluster_arn(&self, name: &str) -> String {
        format!("{}cluster/{name}", self.prefix())
    }

    pub fn task_definition_arn(&self, family: &str, revision: i64) -> String {
        format!("{}task-definition/{family}:{revision}", self.prefix())
    }

    pub fn container_instance_arn(&self, cluster: &str, id: &str) -> String {
        format!("{}container-instance/{cluster}/{id}", self.prefix())
    }

    pub fn task_arn(&self, cluster: &str, id: &str) -> String {
        format!("{}task/{cluster}/{id}", self.prefix())
    }

    pub fn container_arn(&self, cluster: &str, task_id: &str, id: &str) -> String {
        format!("{}container/{cluster}/{task_id}/{id}", self.prefix())
    }

    /// The part of an ARN of this scope after `RESOURCE/`, or `None` when `reference` is not an
    /// ARN of this scope for that resource type.
    fn resource_path<'a>(&self, reference: &'a str, resource: &str) -> Option<&'a str> {
        let rest = reference.strip_prefix(&self.prefix())?;
        rest.strip_prefix(resource)?.strip_prefix('/')
    }

    /// The cluster name a short name or ARN refers to; `None` for an ARN that names no cluster
    /// of this scope.
    pub fn cluster_name<'a>(&self, reference: &'a str) -> Option<&'a str> {
        if reference.starts_with("arn:") {
            self.resource_path(reference, "cluster")
                .filter(|name| !name.contains('/'))
        } else {
            Some(reference)
        }
    }

    /// The id a resource reference (id, `RESOURCE/CLUSTER/ID` ARN or the older `RESOURCE/ID`
    /// ARN) names, with the cluster when the ARN carries one. `None` when it is an ARN that names
    /// no such resource in this scope.
    pub fn resource_id<'a>(&self, reference: &'a str, resource: &str) -> Option<ResourceRef<'a>> {
        if !reference.starts_with("arn:") {
            return Some(ResourceRef {
                cluster: None,
                id: reference,
            });
        }
        let path = self.resource_path(reference, resource)?;
        match path.split_once('/') {
            Some((cluster, id)) if !id.contains('/') => Some(ResourceRef {
                cluster: Some(cluster),
                id,
            }),
            Some(_) => None,
            None => Some(ResourceRef {
                cluster: None,
                id: path,
            }),
        }
    }

    /// The id of a resource of type `resource` of `cluster` named by id or ARN; `None` for an
    /// ARN of another cluster, scope or resource type.
    pub fn id_in<'a>(&self, reference: &'a str, resource: &str, cluster: &str) -> Option<&'a str> {
        self.resource_id(reference, resource)
            .filter(|r| r.cluster.is_none_or(|c| c == cluster))
            .map(|r| r.id)
    }

    /// `family`, `family:revision` or a task definition ARN, as (family, revision).
    pub fn task_definition_ref<'a>(&self, reference: &'a str) -> Option<(&'a str, Option<i64>)> {
        let short = if reference.starts_with("arn:") {
            self.resource_path(reference, "task-definition")?
        } else {
            reference
        };
        match short.split_once(':') {
            Some((family, revision)) => {
                let revision = revision.parse::<i64>().ok().filter(|r| *r > 0)?;
                Some((family, Some(revision)))
            }
            None => Some((short, None)),
        }
    }
}

/// The cluster the resource an ECS ARN names belongs to: the cluster itself, or the cluster in
/// the ARN of a task, container instance, container, service or task set. `None` for resources
/// of no cluster (task definitions), ARNs that carry none (the older `task/ID` form) and
/// anything that is not an ECS ARN. Whatever account or region the ARN is of.
pub fn cluster_of(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(_partition), Some("ecs"), Some(_region), Some(_account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let (kind, path) = resource.split_once('/')?;
    match kind {
        "cluster" => Some(path).filter(|name| !name.is_empty() && !name.contains('/')),
        "task" | "container-instance" | "container" | "service" | "task-set" | "service-deployment"
        | "service-revision" => {
            let (cluster, rest) = path.split_once('/')?;
            (!cluster.is_empty() && !rest.is_empty()).then_some(cluster)
        }
        _ => None,
    }
}

/// A resource named by id, with the cluster its ARN carried, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResourceRef<'a> {
    pub cluster: Option<&'a str>,
    pub id: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        Scope::new("123456789012", "us-east-1")
    }

    #[test]
    fn arns_have_the_ecs_layout() {
        let s = scope();
        assert_eq!(
            s.cluster_arn("default"),
            "arn:aws:ecs:us-east-1:123456789012:cluster/default"
        );
        assert_eq!(s.task_arn("c", "abc"), "arn:aws:ecs:us-east-1:123456789012:task/c/abc");
        assert_eq!(
            s.task_definition_arn("web", 3),
            "arn:aws:ecs:us-east-1:123456789012:task-definition/web:3"
        );
        assert_eq!(
            Scope::new("1", "cn-north-1").cluster_arn("x"),
            "arn:aws-cn:ecs:cn-north-1:1:cluster/x"
        );
    }

    #[test]
    fn cluster_references_resolve_only_within_the_scope() {
        let s = scope();
        assert_eq!(s.cluster_name("default"), Some("default"));
        assert_eq!(s.cluster_name(&s.cluster_arn("prod")), Some("prod"));
        assert_eq!(s.cluster_name("arn:aws:ecs:eu-west-1:123456789012:cluster/prod"), None);
        assert_eq!(s.cluster_name("arn:aws:ecs:us-east-1:123456789012:task/x/y"), None);
    }

    #[test]
    fn resource_references_accept_ids_and_both_arn_forms() {
        let s = scope();
        assert_eq!(
            s.resource_id("abc", "task"),
            Some(ResourceRef {
                cluster: None,
                id: "abc"
            })
        );
        assert_eq!(
            s.resource_id(&s.task_arn("c", "abc"), "task"),
            Some(ResourceRef {
                cluster: Some("c"),
                id: "abc"
            })
        );
        assert_eq!(
            s.resource_id("arn:aws:ecs:us-east-1:123456789012:task/abc", "task"),
            Some(ResourceRef {
                cluster: None,
                id: "abc"
            })
        );
        assert_eq!(s.resource_id(&s.task_arn("c", "abc"), "container-instance"), None);
    }

    #[test]
    fn the_cluster_an_arn_belongs_to() {
        let s = scope();
        assert_eq!(cluster_of(&s.cluster_arn("prod")), Some("prod"));
        assert_eq!(cluster_of(&s.task_arn("prod", "abc")), Some("prod"));
        assert_eq!(cluster_of(&s.container_instance_arn("edge", "i1")), Some("edge"));
        assert_eq!(cluster_of(&s.container_arn("edge", "t", "c")), Some("edge"));
        assert_eq!(
            cluster_of("arn:aws:ecs:eu-west-1:999999999999:service/web/api"),
            Some("web")
        );
        assert_eq!(cluster_of("arn:aws:ecs:us-east-1:123456789012:task/abc"), None);
        assert_eq!(cluster_of(&s.task_definition_arn("web", 1)), None);
        assert_eq!(cluster_of("arn:aws:iam::123456789012:role/x"), None);
        assert_eq!(cluster_of("prod"), None);
    }

    #[test]
    fn task_definition_references() {
        let s = scope();
        assert_eq!(s.task_definition_ref("web"), Some(("web", None)));
        assert_eq!(s.task_definition_ref("web:7"), Some(("web", Some(7))));
        assert_eq!(
            s.task_definition_ref(&s.task_definition_arn("web", 2)),
            Some(("web", Some(2)))
        );
        assert_eq!(s.task_definition_ref("web:x"), None);
        assert_eq!(s.task_definition_ref("web:0"), None);
    }
}
