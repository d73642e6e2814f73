//! Principals and what they may do, from a credentials file (TOML):
//!
//! ```toml
//! [[principals]]
//! name = "ci"                          # shown in AccessDenied messages
//! access_key_id = "AKIAECSDCI0000000001"
//! secret_access_key = "..."
//! account_id = "111122223333"          # the account its resources live in
//! permissions = ["operator"]           # permission sets and/or action globs ("ecs:Describe*")
//! clusters = ["ci-*"]                  # optional: the only clusters it may name
//! ```
//!
//! Without a file, ecsd knows one development principal: `test` / `test`, every permission, in
//! the account given by `--account-id`.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use zeroize::Zeroizing;

/// The agent permission set: what an ECS container agent calls.
pub const AGENT: &[&str] = &[
    "ecs:RegisterContainerInstance",
    "ecs:DeregisterContainerInstance",
    "ecs:DiscoverPollEndpoint",
    "ecs:Submit*",
    "ecs:Poll",
    "ecs:StartTelemetrySession",
];

/// The operator permission set: everything people and CI call, nothing only agents call.
pub const OPERATOR: &[&str] = &[
    "ecs:Create*",
    "ecs:Delete*",
    "ecs:Deregister*",
    "ecs:Describe*",
    "ecs:List*",
    "ecs:Put*",
    "ecs:Register*",
    "ecs:RunTask",
    "ecs:StartTask",
    "ecs:StopTask",
    "ecs:TagResource",
    "ecs:UntagResource",
    "ecs:Update*",
    "ecs:ReadEvents",
    "ecsd:ReadMetrics",
];

pub const DEVELOPMENT_KEY: &str = "test";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the credentials file: {0}")]
    Read(#[from] std::io::Error),
    #[error("the credentials file is not valid: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("principal '{name}': {problem}")]
    Principal { name: String, problem: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    principals: Vec<PrincipalConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalConfig {
    name: String,
    access_key_id: String,
    secret_access_key: String,
    #[serde(default)]
    session_token: Option<String>,
    account_id: String,
    permissions: Vec<String>,
    #[serde(default)]
    clusters: Option<Vec<String>>,
}

/// Someone who can sign requests.
pub struct Principal {
    name: String,
    account_id: String,
    secret: Zeroizing<String>,
    session_token: Option<Zeroizing<String>>,
    actions: Vec<String>,
    clusters: Option<Vec<String>>,
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principal")
            .field("name", &self.name)
            .field("account_id", &self.account_id)
            .finish_non_exhaustive()
    }
}

impl Principal {
    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    pub fn secret(&self) -> &str {
        &self.secret
    }

    pub fn session_token(&self) -> Option<&str> {
        self.session_token.as_deref().map(String::as_str)
    }

    /// The principal's name in the credentials file.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The principal's ARN, as AccessDenied messages name it.
    pub fn arn(&self) -> String {
        format!("arn:aws:iam::{}:user/{}", self.account_id, self.name)
    }

    /// Whether the principal may call `action` (`ecs:RunTask`). IAM action names are
    /// case-insensitive.
    pub fn may(&self, action: &str) -> bool {
        let action = action.to_ascii_lowercase();
        self.actions.iter().any(|glob| matches(glob, &action))
    }

    /// Whether the principal may name the cluster `name`.
    pub fn may_use_cluster(&self, name: &str) -> bool {
        self.clusters
            .as_ref()
            .is_none_or(|globs| globs.iter().any(|g| matches(g, name)))
    }
}

/// The principals, by access key id.
#[derive(Debug, Default)]
pub struct Keys {
    by_access_key: HashMap<String, Arc<Principal>>,
    /// The signing keys derived from their secrets.
    pub(super) signing: super::sigv4::SigningKeys,
}

impl Keys {
    /// The development principal only: `test` / `test`, every permission, in `account_id`.
    pub fn development(account_id: &str) -> Keys {
        let principal = Principal {
            name: "test".into(),
            account_id: account_id.into(),
            secret: Zeroizing::new(DEVELOPMENT_KEY.into()),
            session_token: None,
            actions: vec!["ecs:*".into()],
            clusters: None,
        };
        Keys {
            by_access_key: HashMap::from([(DEVELOPMENT_KEY.into(), Arc::new(principal))]),
            signing: Default::default(),
        }
    }

    pub fn load(path: &std::path::Path) -> Result<Keys, PolicyError> {
        Self::from_toml(&std::fs::read_to_string(path)?)
    }

    pub fn from_toml(text: &str) -> Result<Keys, PolicyError> {
        let file: File = toml::from_str(text)?;
        let mut by_access_key = HashMap::new();
        for p in file.principals {
            let problem = |problem: String| PolicyError::Principal {
                name: p.name.clone(),
                problem,
            };
            if p.account_id.len() != 12 || !p.account_id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(problem(format!("account_id '{}' is not 12 digits", p.account_id)));
            }
            if p.access_key_id.is_empty() || p.secret_access_key.is_empty() {
                return Err(problem("access_key_id and secret_access_key must not be empty".into()));
            }
            let mut actions = Vec::new();
            for permission in &p.permissions {
                match permission.as_str() {
                    "agent" => actions.extend(AGENT.iter().map(|a| a.to_ascii_lowercase())),
                    "operator" => actions.extend(OPERATOR.iter().map(|a| a.to_ascii_lowercase())),
                    "admin" => actions.extend(["ecs:*".into(), "ecsd:*".into()]),
                    glob if glob.starts_with("ecs:") || glob.starts_with("ecsd:") => {
                        actions.push(glob.to_ascii_lowercase())
                    }
                    other => {
                        return Err(problem(format!(
                        "permission '{other}' is neither a set (agent, operator, admin) nor an action glob (ecs:... or ecsd:...)"
                    )))
                    }
                }
            }
            let principal = Principal {
                name: p.name.clone(),
                account_id: p.account_id.clone(),
                secret: Zeroizing::new(p.secret_access_key.clone()),
                session_token: p.session_token.clone().map(Zeroizing::new),
                actions,
                clusters: p.clusters.clone(),
            };
            if by_access_key
                .insert(p.access_key_id.clone(), Arc::new(principal))
                .is_some()
            {
                return Err(problem(format!("access_key_id '{}' is used twice", p.access_key_id)));
            }
        }
        Ok(Keys {
            by_access_key,
            signing: Default::default(),
        })
    }

    pub fn get(&self, access_key: &str) -> Option<&Arc<Principal>> {
        self.by_access_key.get(access_key)
    }
}

/// `*` matches any run of characters, `?` any one; everything else matches itself.
fn matches(glob: &str, text: &str) -> bool {
    let (g, t): (Vec<char>, Vec<char>) = (glob.chars().collect(), text.chars().collect());
    let (mut gi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if gi < g.len() && (g[gi] == '?' || g[gi] == t[ti]) {
            gi += 1;
            ti += 1;
        } else if gi < g.len() && g[gi] == '*' {
            backtrack = Some((gi, ti));
            gi += 1;
        } else if let Some((star, matched)) = backtrack {
            gi = star + 1;
            ti = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(matches("ecs:*", "ecs:runtask"));
        assert!(matches("ecs:describe*", "ecs:describetasks"));
        assert!(!matches("ecs:describe*", "ecs:listtasks"));
        assert!(matches("ci-?", "ci-1"));
        assert!(!matches("ci-?", "ci-12"));
        assert!(matches("*-prod", "eu-prod"));
        assert!(matches("a*b*c", "axxbyyc"));
        assert!(!matches("a*b*c", "axxbyy"));
    }

    #[test]
    fn permission_sets() {
        let keys = Keys::from_toml(
            r#"
            [[principals]]
            name = "agent"
            access_key_id = "A1"
            secret_access_key = "s"
            account_id = "111122223333"
            permissions = ["agent"]

            [[principals]]
            name = "ops"
            access_key_id = "A2"
            secret_access_key = "s"
            account_id = "111122223333"
            permissions = ["operator", "ecs:SubmitTaskStateChange"]
            clusters = ["ci-*"]
            "#,
        )
        .unwrap();
        let agent = keys.get("A1").unwrap();
        assert!(agent.may("ecs:SubmitTaskStateChange"));
        assert!(agent.may("ecs:RegisterContainerInstance"));
        assert!(!agent.may("ecs:RunTask"));
        assert!(agent.may_use_cluster("anything"));
        let ops = keys.get("A2").unwrap();
        assert!(ops.may("ecs:RunTask") && ops.may("ecs:DescribeTasks") && ops.may("ecs:SubmitTaskStateChange"));
        assert!(!ops.may("ecs:DiscoverPollEndpoint"));
        assert!(ops.may_use_cluster("ci-7") && !ops.may_use_cluster("prod"));
        assert_eq!(ops.arn(), "arn:aws:iam::111122223333:user/ops");
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let bad = |text: &str| Keys::from_toml(text).unwrap_err().to_string();
        assert!(bad("[[principals]]\nname='x'").contains("missing field"));
        let base = "[[principals]]\nname='x'\naccess_key_id='a'\nsecret_access_key='s'\n";
        assert!(bad(&format!("{base}account_id='12'\npermissions=[]")).contains("12 digits"));
        assert!(bad(&format!("{base}account_id='111122223333'\npermissions=['root']")).contains("'root'"));
        let twice =
            format!("{base}account_id='111122223333'\npermissions=[]\n{base}account_id='111122223333'\npermissions=[]");
        assert!(bad(&twice).contains("used twice"));
    }
}
