//! The cluster query language, for `memberOf` placement constraints and the `filter` of
//! ListContainerInstances: `attribute:ecs.instance-type == t2.small`,
//! `attribute:ecs.availability-zone in [us-east-1a, us-east-1b] and not(agentConnected == false)`,
//! `task:group == web`, `attribute:custom exists`, `ec2InstanceId =~ i-0.*`.
//!
//! Subjects: `attribute:NAME`, `agentConnected`, `agentVersion`, `ec2InstanceId`,
//! `registeredAt`, `runningTasksCount`, `task:group`. Operators: `==`/`equals`,
//! `!=`/`not_equals`, `>`, `>=`, `<`, `<=` (and their word forms), `exists`, `!exists`/`not_exists`,
//! `in`, `not_in`, `=~`/`matches`, `!~`/`not_matches`. Expressions combine with `and`/`&&`,
//! `or`/`||`, `not(...)`/`!(...)` and parentheses; `and` binds tighter than `or`.

use std::cmp::Ordering;

use crate::error::ApiError;

/// What an expression is evaluated against: one container instance.
#[derive(Clone, Debug, Default)]
pub struct Facts<'a> {
    pub attributes: Vec<(&'a str, Option<&'a str>)>,
    pub ec2_instance_id: Option<&'a str>,
    pub agent_connected: bool,
    pub agent_version: Option<&'a str>,
    pub registered_at: f64,
    pub running_tasks_count: i64,
    /// Groups of the tasks the instance holds.
    pub task_groups: Vec<&'a str>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare {
        subject: Subject,
        op: Op,
        values: Vec<String>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Subject {
    Attribute(String),
    AgentConnected,
    AgentVersion,
    Ec2InstanceId,
    RegisteredAt,
    RunningTasksCount,
    TaskGroup,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Exists,
    NotExists,
    In,
    NotIn,
    Matches,
    NotMatches,
}

const MAX_LEN: usize = 2000;

fn invalid(expression: &str, why: &str) -> ApiError {
    ApiError::invalid_parameter(format!("Invalid expression '{expression}': {why}"))
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
}

fn tokenize(text: &str) -> Result<Vec<Token>, ApiError> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | '[' | ']' | ',' => {
                chars.next();
                tokens.push(match c {
                    '(' => Token::LParen,
                    ')' => Token::RParen,
                    '[' => Token::LBracket,
                    ']' => Token::RBracket,
                    _ => Token::Comma,
                });
            }
            '"' | '\'' => {
                chars.next();
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some(ch) => value.push(ch),
                        None => return Err(invalid(text, "unterminated quoted value")),
                    }
                }
                tokens.push(Token::Quoted(value));
            }
            _ => {
                let mut word = String::new();
                while let Some(&ch) = chars.peek() {
                    if ch.is_whitespace() || "()[],\"'".contains(ch) {
                        break;
                    }
                    word.push(ch);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    Ok(tokens)
}

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<Token>,
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn peek_word(&self) -> Option<&str> {
        match self.peek() {
            Some(Token::Word(w)) => Some(w),
            _ => None,
        }
    }

    fn expect(&mut self, token: Token, what: &str) -> Result<(), ApiError> {
        if self.next() == Some(token) {
            Ok(())
        } else {
            Err(invalid(self.text, &format!("expected {what}")))
        }
    }

    fn or(&mut self) -> Result<Expr, ApiError> {
        let mut left = self.and()?;
        while matches!(self.peek_word(), Some("or" | "||")) {
            self.next();
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ApiError> {
        let mut left = self.unary()?;
        while matches!(self.peek_word(), Some("and" | "&&")) {
            self.next();
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, ApiError> {
        match self.peek() {
            Some(Token::Word(w)) if w == "not" || w == "!" => {
                self.next();
                self.expect(Token::LParen, "'(' after not")?;
                let inner = self.or()?;
                self.expect(Token::RParen, "')'")?;
                Ok(Expr::Not(Box::new(inner)))
            }
            Some(Token::LParen) => {
                self.next();
                let inner = self.or()?;
                self.expect(Token::RParen, "')'")?;
                Ok(inner)
            }
            _ => self.comparison(),
        }
    }

    fn comparison(&mut self) -> Result<Expr, ApiError> {
        let subject = match self.next() {
            Some(Token::Word(w)) => {
                parse_subject(&w).ok_or_else(|| invalid(self.text, &format!("unknown subject '{w}'")))?
            }
            _ => return Err(invalid(self.text, "expected a subject such as attribute:NAME")),
        };
        let op = match self.next() {
            Some(Token::Word(w)) => {
                parse_op(&w).ok_or_else(|| invalid(self.text, &format!("unknown operator '{w}'")))?
            }
            _ => return Err(invalid(self.text, "expected an operator")),
        };
        let values = match op {
            Op::Exists | Op::NotExists => Vec::new(),
            Op::In | Op::NotIn => {
                self.expect(Token::LBracket, "'[' after in")?;
                let mut values = Vec::new();
                loop {
                    match self.next() {
                        Some(Token::Word(w) | Token::Quoted(w)) => values.push(w),
                        _ => return Err(invalid(self.text, "expected a value in the list")),
                    }
                    match self.next() {
                        Some(Token::Comma) => continue,
                        Some(Token::RBracket) => break,
                        _ => return Err(invalid(self.text, "expected ',' or ']'")),
                    }
                }
                values
            }
            _ => match self.next() {
                Some(Token::Word(w) | Token::Quoted(w)) => vec![w],
                _ => return Err(invalid(self.text, "expected a value")),
            },
        };
        if matches!(op, Op::Matches | Op::NotMatches) {
            regex_lite::Regex::new(&values[0]).map_err(|e| invalid(self.text, &format!("bad pattern: {e}")))?;
        }
        Ok(Expr::Compare { subject, op, values })
    }
}

fn parse_subject(word: &str) -> Option<Subject> {
    if let Some(name) = word.strip_prefix("attribute:") {
        return (!name.is_empty()).then(|| Subject::Attribute(name.to_owned()));
    }
    Some(match word {
        "agentConnected" => Subject::AgentConnected,
        "agentVersion" => Subject::AgentVersion,
        "ec2InstanceId" => Subject::Ec2InstanceId,
        "registeredAt" => Subject::RegisteredAt,
        "runningTasksCount" => Subject::RunningTasksCount,
        "task:group" => Subject::TaskGroup,
        _ => return None,
    })
}

fn parse_op(word: &str) -> Option<Op> {
    Some(match word {
        "==" | "equals" => Op::Eq,
        "!=" | "not_equals" => Op::Ne,
        ">" | "greater_than" => Op::Gt,
        ">=" | "greater_than_equal" => Op::Ge,
        "<" | "less_than" => Op::Lt,
        "<=" | "less_than_equal" => Op::Le,
        "exists" => Op::Exists,
        "!exists" | "not_exists" => Op::NotExists,
        "in" => Op::In,
        "not_in" => Op::NotIn,
        "=~" | "matches" => Op::Matches,
        "!~" | "not_matches" => Op::NotMatches,
        _ => return None,
    })
}

/// Parses an expression, naming what is wrong with it.
pub fn parse(text: &str) -> Result<Expr, ApiError> {
    if text.len() > MAX_LEN {
        return Err(invalid(&text[..40], &format!("longer than {MAX_LEN} characters")));
    }
    let mut parser = Parser {
        text,
        tokens: tokenize(text)?,
        at: 0,
    };
    if parser.tokens.is_empty() {
        return Err(invalid(text, "it is empty"));
    }
    let expr = parser.or()?;
    if parser.at != parser.tokens.len() {
        return Err(invalid(text, "unexpected text after the expression"));
    }
    Ok(expr)
}

/// Orders two values as numbers when both are, as timestamps when one side is a date, else as
/// text.
fn compare(left: &str, right: &str) -> Ordering {
    match (left.parse::<f64>(), right.parse::<f64>()) {
        (Ok(l), Ok(r)) => l.total_cmp(&r),
        _ => left.cmp(right),
    }
}

fn epoch_of(value: &str) -> Option<f64> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(v) = value.parse::<f64>() {
        return Some(v);
    }
    if let Ok(t) = time::OffsetDateTime::parse(value, &Rfc3339) {
        return Some(t.unix_timestamp() as f64);
    }
    let date = time::Date::parse(value, time::macros::format_description!("[year]-[month]-[day]")).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp() as f64)
}

impl Expr {
    pub fn matches(&self, facts: &Facts<'_>) -> bool {
        match self {
            Expr::And(a, b) => a.matches(facts) && b.matches(facts),
            Expr::Or(a, b) => a.matches(facts) || b.matches(facts),
            Expr::Not(e) => !e.matches(facts),
            Expr::Compare { subject, op, values } => {
                let owned;
                let candidates: Vec<&str> = match subject {
                    Subject::Attribute(name) => {
                        let found: Vec<Option<&str>> = facts
                            .attributes
                            .iter()
                            .filter(|(n, _)| n == name)
                            .map(|(_, v)| *v)
                            .collect();
                        match op {
                            Op::Exists => return !found.is_empty(),
                            Op::NotExists => return found.is_empty(),
                            _ => found.into_iter().map(|v| v.unwrap_or("")).collect(),
                        }
                    }
                    Subject::TaskGroup => facts.task_groups.clone(),
                    Subject::AgentConnected => {
                        owned = facts.agent_connected.to_string();
                        vec![owned.as_str()]
                    }
                    Subject::AgentVersion => facts.agent_version.into_iter().collect(),
                    Subject::Ec2InstanceId => facts.ec2_instance_id.into_iter().collect(),
                    Subject::RunningTasksCount => {
                        owned = facts.running_tasks_count.to_string();
                        vec![owned.as_str()]
                    }
                    Subject::RegisteredAt => {
                        let Some(right) = values.first().and_then(|v| epoch_of(v)) else {
                            return matches!(op, Op::Exists);
                        };
                        owned = facts.registered_at.to_string();
                        return compare_op(*op, &[owned.as_str()], &[right.to_string()]);
                    }
                };
                match op {
                    Op::Exists => !candidates.is_empty(),
                    Op::NotExists => candidates.is_empty(),
                    _ => compare_op(*op, &candidates, values),
                }
            }
        }
    }
}

fn compare_op(op: Op, candidates: &[&str], values: &[String]) -> bool {
    let any = |f: &dyn Fn(&str) -> bool| candidates.iter().any(|c| f(c));
    let value = values.first().map(String::as_str).unwrap_or("");
    let regex = || regex_lite::Regex::new(&format!("^(?:{value})$")).ok();
    match op {
        Op::Eq => any(&|c| c == value),
        Op::Ne => !any(&|c| c == value),
        Op::Gt => any(&|c| compare(c, value) == Ordering::Greater),
        Op::Ge => any(&|c| compare(c, value) != Ordering::Less),
        Op::Lt => any(&|c| compare(c, value) == Ordering::Less),
        Op::Le => any(&|c| compare(c, value) != Ordering::Greater),
        Op::In => any(&|c| values.iter().any(|v| v == c)),
        Op::NotIn => !any(&|c| values.iter().any(|v| v == c)),
        Op::Matches => regex().is_some_and(|r| any(&|c| r.is_match(c))),
        Op::NotMatches => regex().is_some_and(|r| !any(&|c| r.is_match(c))),
        Op::Exists => !candidates.is_empty(),
        Op::NotExists => candidates.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts<'static> {
        Facts {
            attributes: vec![
                ("ecs.instance-type", Some("t2.small")),
                ("ecs.availability-zone", Some("us-east-1a")),
                ("ecs.capability.docker-remote-api.1.44", None),
                ("rack", Some("7")),
            ],
            ec2_instance_id: Some("i-0abc"),
            agent_connected: true,
            agent_version: Some("1.105.0"),
            registered_at: 1_700_000_000.0,
            running_tasks_count: 3,
            task_groups: vec!["family:web", "batch"],
        }
    }

    fn eval(text: &str) -> bool {
        parse(text).unwrap_or_else(|e| panic!("{text}: {e}")).matches(&facts())
    }

    #[test]
    fn comparisons() {
        assert!(eval("attribute:ecs.instance-type == t2.small"));
        assert!(!eval("attribute:ecs.instance-type != t2.small"));
        assert!(eval("attribute:ecs.instance-type equals t2.small"));
        assert!(eval("attribute:ecs.availability-zone in [us-east-1a, us-east-1b]"));
        assert!(!eval("attribute:ecs.availability-zone not_in [us-east-1a, us-east-1b]"));
        assert!(eval("attribute:ecs.instance-type =~ t2.*"));
        assert!(!eval("attribute:ecs.instance-type =~ t2"));
        assert!(eval("attribute:ecs.instance-type !~ m5.*"));
        assert!(eval("attribute:ecs.capability.docker-remote-api.1.44 exists"));
        assert!(eval("attribute:missing !exists"));
        assert!(!eval("attribute:missing == x"));
        assert!(eval("attribute:rack > 5") && eval("attribute:rack <= 7") && !eval("attribute:rack < 7"));
        assert!(eval("runningTasksCount >= 3") && !eval("runningTasksCount > 3"));
        assert!(eval("agentConnected == true") && eval("agentVersion == 1.105.0"));
        assert!(eval("ec2InstanceId == i-0abc") && eval("task:group == batch"));
        assert!(eval("registeredAt > 2023-01-01") && eval("registeredAt < 2024-01-01T00:00:00Z"));
        assert!(eval("attribute:rack == '7'"));
    }

    #[test]
    fn combinations_and_precedence() {
        assert!(eval("attribute:rack == 7 and task:group == batch"));
        assert!(!eval("attribute:rack == 7 and task:group == nope"));
        assert!(eval("attribute:rack == 1 or attribute:rack == 7"));
        // and binds tighter than or
        assert!(eval(
            "attribute:rack == 7 or attribute:rack == 1 and task:group == nope"
        ));
        assert!(!eval(
            "(attribute:rack == 7 or attribute:rack == 1) and task:group == nope"
        ));
        assert!(eval("not(attribute:rack == 1)") && !eval("!(attribute:rack == 7)"));
        assert!(eval(
            "attribute:rack == 7 && (agentConnected == true || ec2InstanceId == x)"
        ));
    }

    #[test]
    fn errors_name_the_expression() {
        for bad in [
            "",
            "attribute:rack",
            "attribute:rack ~~ 7",
            "rack == 7",
            "attribute:rack in [1, 2",
            "attribute:rack == 7 extra",
            "not attribute:rack == 7",
            "attribute:rack =~ (",
            "(attribute:rack == 7",
            "attribute:rack == 'open",
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.code, crate::error::ErrorCode::InvalidParameterException, "{bad}");
            assert!(err.message.contains("Invalid expression"), "{bad}: {}", err.message);
        }
        assert!(parse(&"x".repeat(3000)).is_err());
    }
}
