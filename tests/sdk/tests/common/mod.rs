//! Runs ecsd in-process on a loopback port and builds real `aws-sdk-ecs` clients for it.

#![allow(dead_code)] // each test binary uses its own part of the harness

use std::path::Path;

use aws_sdk_ecs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ecs::Client;
use ecsd::server::{Options, Server};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "us-east-1";

pub struct Running {
    pub url: String,
    stop: oneshot::Sender<()>,
    handle: JoinHandle<()>,
}

impl Running {
    /// Starts ecsd on `data_dir`, listening on a free loopback port.
    pub async fn start(data_dir: &Path) -> Running {
        let server = Server::open(Options {
            data_dir: data_dir.to_owned(),
            region: REGION.into(),
            account_id: ACCOUNT.into(),
        })
        .await
        .expect("the store opens");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            server
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await
                .expect("the server runs");
        });
        Running { url, stop, handle }
    }

    /// Stops the server and waits until its store is closed.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.handle.await.unwrap();
    }

    pub fn client(&self) -> Client {
        let config = aws_sdk_ecs::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.url)
            .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .build();
        Client::from_conf(config)
    }

    /// Sends a raw AWS JSON request, for what the SDK would refuse to send.
    pub async fn raw(
        &self,
        target: Option<&str>,
        body: &str,
    ) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
        let mut request = reqwest::Client::new()
            .post(format!("{}/", self.url))
            .header("content-type", "application/x-amz-json-1.1")
            .body(body.to_owned());
        if let Some(target) = target {
            request = request.header("x-amz-target", target);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.json().await.unwrap_or(serde_json::Value::Null);
        (status, headers, body)
    }
}

/// What an ECS agent registers with: 2 vCPUs, 4 GiB, the usual reserved ports.
pub fn agent_resources() -> Vec<aws_sdk_ecs::types::Resource> {
    use aws_sdk_ecs::types::Resource;
    vec![
        Resource::builder()
            .name("CPU")
            .r#type("INTEGER")
            .integer_value(2048)
            .build(),
        Resource::builder()
            .name("MEMORY")
            .r#type("INTEGER")
            .integer_value(4096)
            .build(),
        Resource::builder()
            .name("PORTS")
            .r#type("STRINGSET")
            .set_string_set_value(Some(vec![
                "22".into(),
                "2375".into(),
                "2376".into(),
                "51678".into(),
                "51679".into(),
            ]))
            .build(),
        Resource::builder()
            .name("PORTS_UDP")
            .r#type("STRINGSET")
            .set_string_set_value(Some(vec![]))
            .build(),
    ]
}

/// The service error code of a failed SDK call.
pub fn error_code<E, R>(err: &aws_sdk_ecs::error::SdkError<E, R>) -> String
where
    E: aws_sdk_ecs::error::ProvideErrorMetadata,
{
    err.as_service_error()
        .and_then(|e| e.code())
        .map(str::to_owned)
        .unwrap_or_else(|| "<not a service error>".into())
}

pub fn error_message<E, R>(err: &aws_sdk_ecs::error::SdkError<E, R>) -> String
where
    E: aws_sdk_ecs::error::ProvideErrorMetadata,
{
    err.as_service_error()
        .and_then(|e| e.message())
        .map(str::to_owned)
        .unwrap_or_default()
}
