//! Runs ecsd in-process on a loopback port and builds real `aws-sdk-ecs` clients for it, plus a
//! raw-request helper (signed with SigV4, or not) for what the SDK would refuse to send.

#![allow(dead_code)] // each test binary uses its own part of the harness

pub mod fake_agent;

use std::path::Path;
use std::time::SystemTime;

use aws_sdk_ecs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ecs::Client;
use ecsd::server::{Options, Server};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "us-east-1";
pub const TARGET: &str = "AmazonEC2ContainerServiceV20141113.";

pub struct Running {
    pub url: String,
    stop: oneshot::Sender<()>,
    handle: JoinHandle<()>,
}

/// A raw answer: status, headers, JSON body (Null when not JSON).
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub json: serde_json::Value,
}

/// The development options for `data_dir`; with `ECSD_TEST_POSTGRES` set (a `postgres://` URL
/// of a database to connect to), the store is instead a PostgreSQL database of its own, named
/// after `data_dir` (so that a restart on the same directory finds the same data) under the
/// run's prefix `ECSD_TEST_DB_PREFIX` (so that the run drops exactly its own).
pub async fn development(data_dir: &Path) -> Options {
    let mut options = Options::development(data_dir.to_owned(), ACCOUNT);
    if let Ok(admin) = std::env::var("ECSD_TEST_POSTGRES") {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        data_dir.hash(&mut hasher);
        let prefix = std::env::var("ECSD_TEST_DB_PREFIX").unwrap_or_else(|_| "ecsd_test".into());
        let name = format!("{prefix}_t_{:016x}", hasher.finish());
        let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        if let Err(e) = client.batch_execute(&format!("CREATE DATABASE {name}")).await {
            let exists = e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE);
            assert!(exists, "cannot create the test database: {e}");
        }
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base);
        options.store_url = Some(format!("{base}/{name}"));
    }
    options
}

impl Running {
    /// Starts ecsd on `data_dir` with the development credentials, listening on a free port.
    pub async fn start(data_dir: &Path) -> Running {
        Self::start_with(development(data_dir).await).await
    }

    pub async fn start_with(options: Options) -> Running {
        let server = Server::open(options).await.expect("the store opens");
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
        self.client_as("test", "test", REGION)
    }

    /// A client signing with other keys or for another region; it does not retry.
    pub fn client_as(&self, access_key: &str, secret: &str, region: &str) -> Client {
        let config = aws_sdk_ecs::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .endpoint_url(&self.url)
            .credentials_provider(Credentials::new(access_key, secret, None, None, "tests"))
            .retry_config(aws_sdk_ecs::config::retry::RetryConfig::disabled())
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .build();
        Client::from_conf(config)
    }

    /// Sends `body` to `POST /` signed as `test`/`test` now, with `target` as X-Amz-Target.
    pub async fn raw(&self, target: Option<&str>, body: &str) -> Answer {
        let mut headers = vec![("content-type".to_owned(), "application/x-amz-json-1.1".to_owned())];
        if let Some(target) = target {
            headers.push(("x-amz-target".to_owned(), target.to_owned()));
        }
        let signed = self.sign(&headers, body.as_bytes(), SystemTime::now());
        self.send(signed, body.as_bytes().to_vec()).await
    }

    /// The headers of a request signed as `test`/`test` at `time` (host and x-amz-date added).
    pub fn sign(&self, headers: &[(String, String)], body: &[u8], time: SystemTime) -> Vec<(String, String)> {
        use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
        let host = self.url.trim_start_matches("http://").to_owned();
        let mut all: Vec<(String, String)> = headers.to_vec();
        all.push(("host".into(), host));
        let identity = aws_credential_types::Credentials::new("test", "test", None, None, "tests").into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(REGION)
            .name("ecs")
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let signable = SignableRequest::new(
            "POST",
            "/",
            all.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(body),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        all.extend(instructions.headers().map(|(k, v)| (k.to_owned(), v.to_owned())));
        all
    }

    /// Sends a request with exactly these headers (no signing of its own).
    pub async fn send(&self, headers: Vec<(String, String)>, body: Vec<u8>) -> Answer {
        let mut request = reqwest::Client::new().post(format!("{}/", self.url)).body(body);
        for (k, v) in headers {
            if k != "host" {
                request = request.header(k, v);
            }
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Answer { status, headers, json }
    }
}

/// Registers a container instance in `cluster` as an agent does (see [`agent_resources`]) and
/// returns its ARN.
/// Registers a task definition of one busybox container, `container`, holding `memory` MiB.
pub async fn register_definition(
    client: &Client,
    family: &str,
    container: &str,
    memory: i32,
) -> aws_sdk_ecs::types::TaskDefinition {
    client
        .register_task_definition()
        .family(family)
        .container_definitions(
            aws_sdk_ecs::types::ContainerDefinition::builder()
                .name(container)
                .image("busybox")
                .memory(memory)
                .build(),
        )
        .send()
        .await
        .expect("the task definition registers")
        .task_definition
        .expect("a registered task definition")
}

pub async fn register_instance(client: &Client, cluster: &str) -> String {
    client
        .register_container_instance()
        .cluster(cluster)
        .set_total_resources(Some(agent_resources()))
        .send()
        .await
        .unwrap()
        .container_instance
        .unwrap()
        .container_instance_arn
        .unwrap()
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
    E: aws_sdk_ecs::error::ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
{
    err.as_service_error()
        .and_then(|e| e.code())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("<not a service error: {err:?}>"))
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
