//! Webhook subscriptions: every event (matching the subscription's filters) is POSTed as JSON to
//! the subscription's URL, in order, at least once. A failed delivery is retried with
//! exponential backoff until it succeeds; the position reached is kept in the store, so a
//! restart resumes where delivery stopped.
//!
//! Subscriptions come from a TOML file (`--webhooks FILE`):
//!
//! ```toml
//! [[webhooks]]
//! name = "ci"                                # names the durable delivery cursor
//! url = "http://127.0.0.1:9000/ecs-events"   # plain HTTP
//! account_id = "123456789012"                # optional filters
//! region = "us-east-1"
//! cluster = "default"
//! detail_type = "ECS Task State Change"
//! ```

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tokio::sync::watch;

use crate::store::{EventQuery, Store};

const BATCH: usize = 100;
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(30);
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_POLL: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub name: String,
    pub url: String,
    pub account_id: Option<String>,
    pub region: Option<String>,
    pub cluster: Option<String>,
    pub detail_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    webhooks: Vec<Webhook>,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookConfigError {
    #[error("cannot read the webhooks file: {0}")]
    Read(#[from] std::io::Error),
    #[error("the webhooks file is not valid: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("webhook '{0}': {1}")]
    Invalid(String, String),
}

pub fn load(path: &std::path::Path) -> Result<Vec<Webhook>, WebhookConfigError> {
    parse(&std::fs::read_to_string(path)?)
}

pub fn parse(text: &str) -> Result<Vec<Webhook>, WebhookConfigError> {
    let file: File = toml::from_str(text)?;
    for hook in &file.webhooks {
        if !hook.url.starts_with("http://") || hook.url.parse::<hyper::Uri>().is_err() {
            return Err(WebhookConfigError::Invalid(
                hook.name.clone(),
                format!("'{}' is not an http:// URL", hook.url),
            ));
        }
        if file.webhooks.iter().filter(|h| h.name == hook.name).count() > 1 {
            return Err(WebhookConfigError::Invalid(
                hook.name.clone(),
                "the name is used twice".into(),
            ));
        }
    }
    Ok(file.webhooks)
}

type Http = HttpClient<HttpConnector, Full<Bytes>>;

/// Delivers events to one subscription until `shutdown` becomes true.
pub async fn deliver(store: Arc<dyn Store>, hook: Webhook, mut shutdown: watch::Receiver<bool>) {
    let http: Http = HttpClient::builder(TokioExecutor::new()).build_http();
    let cursor_name = format!("webhook:{}", hook.name);
    let mut commits = store.commits();
    let mut after = loop {
        match store.cursor(cursor_name.clone()).await {
            Ok(seq) => break seq,
            Err(e) => {
                tracing::warn!(webhook = %hook.name, error = %e, "cannot read the delivery cursor; retrying");
                if wait(&mut shutdown, Duration::from_secs(1)).await {
                    return;
                }
            }
        }
    };
    while !*shutdown.borrow() {
        commits.borrow_and_update();
        let query = EventQuery {
            after,
            limit: BATCH,
            account: hook.account_id.clone(),
            region: hook.region.clone(),
            cluster: hook.cluster.clone(),
            detail_type: hook.detail_type.clone(),
            ..EventQuery::default()
        };
        let page = match store.events(query).await {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(webhook = %hook.name, error = %e, "cannot read events; retrying");
                if wait(&mut shutdown, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
        };
        let backlog = (page.last_seq - after).max(0);
        metrics::gauge!(crate::monitoring::WEBHOOK_BACKLOG, "webhook" => hook.name.clone()).set(backlog as f64);
        if page.events.is_empty() {
            tokio::select! {
                _ = commits.changed() => {}
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
            }
            continue;
        }
        for event in page.events {
            let mut retry = FIRST_RETRY;
            loop {
                match post(&http, &hook.url, event.seq, &event.body).await {
                    Ok(()) => break,
                    Err(why) => {
                        tracing::warn!(webhook = %hook.name, seq = event.seq, %why, "delivery failed; will retry");
                        if wait(&mut shutdown, retry).await {
                            return;
                        }
                        retry = (retry * 2).min(LAST_RETRY);
                    }
                }
            }
            after = event.seq;
            if let Err(e) = store.set_cursor(cursor_name.clone(), after).await {
                // The event may be delivered again after a restart: at least once.
                tracing::warn!(webhook = %hook.name, error = %e, "cannot save the delivery cursor");
            }
        }
    }
}

/// Sleeps for `d`; true if the server is stopping.
async fn wait(shutdown: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = shutdown.changed() => {}
        _ = tokio::time::sleep(d) => {}
    }
    *shutdown.borrow()
}

async fn post(http: &Http, url: &str, seq: i64, body: &str) -> Result<(), String> {
    let request = hyper::Request::post(url)
        .header("content-type", "application/json")
        .header("x-ecsd-event-seq", seq.to_string())
        .body(Full::new(Bytes::from(body.to_owned())))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(DELIVERY_TIMEOUT, http.request(request))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("answered {}", response.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_parse_and_are_checked() {
        let hooks = parse("[[webhooks]]\nname = 'a'\nurl = 'http://127.0.0.1:9/x'\ncluster = 'c'\n").unwrap();
        assert_eq!(hooks[0].cluster.as_deref(), Some("c"));
        assert!(parse("[[webhooks]]\nname = 'a'\nurl = 'ftp://x'\n").is_err());
        assert!(
            parse("[[webhooks]]\nname = 'a'\nurl = 'http://x/'\n[[webhooks]]\nname = 'a'\nurl = 'http://y/'\n")
                .is_err()
        );
        assert!(parse("[[webhooks]]\nname = 'a'\nurl = 'http://x/'\nsecret = 1\n").is_err());
    }
}
