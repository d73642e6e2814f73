//! A small ECS API client for ecsd's own tools (the simulated agent, `events tail`): AWS JSON 1.1 over HTTP/1.1 (hyper), signed with SigV4 by `aws-sigv4`, and the
//! signed websocket upgrade of the agent channels (tokio-tungstenite).
//!
//! The full `aws-sdk-ecs` client is what ecsd is tested with; it is kept out of the server's
//! build because of its size. This client calls the handful of operations the tools need, with
//! the request and response shapes of the model.

use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use ecsd::gate::SIGNING_NAME;
use ecsd::wire::TARGET_PREFIX;

/// A websocket opened with [`EcsClient::websocket`].
pub type WebSocket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// `host:port` of a URL.
fn authority(url: &str) -> &str {
    url.split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['/', '?'])
        .next()
        .unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{code}: {message}")]
    Service { code: String, message: String, status: u16 },
    #[error("cannot reach {0}")]
    Transport(String),
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

impl ClientError {
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Service { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// Access key, secret and region to sign with.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
}

/// Plain HTTP/1.1 with a pool of keep-alive connections.
pub type Http = HttpClient<HttpConnector, Full<Bytes>>;

pub fn http() -> Http {
    HttpClient::builder(TokioExecutor::new()).build_http()
}

#[derive(Clone)]
pub struct EcsClient {
    base: String,
    credentials: Credentials,
    http: Http,
    timeout: Duration,
}

impl EcsClient {
    /// A client for the ECS API at `endpoint` (`http://host:port`).
    pub fn new(endpoint: &str, credentials: Credentials) -> EcsClient {
        EcsClient {
            base: endpoint.trim_end_matches('/').to_owned(),
            credentials,
            http: http(),
            timeout: Duration::from_secs(42),
        }
    }

    /// The headers that sign a request to `host` (`host` included).
    fn signature(
        &self,
        method: &str,
        host: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Vec<(String, String)>, ClientError> {
        let mut all: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        all.push(("host".into(), host.to_owned()));
        let identity = aws_credential_types::Credentials::new(
            &self.credentials.access_key_id,
            &self.credentials.secret_access_key,
            None,
            None,
            "ecsd",
        )
        .into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.credentials.region)
            .name(SIGNING_NAME)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| ClientError::Protocol(e.to_string()))?
            .into();
        let signable = SignableRequest::new(
            method,
            path_and_query,
            all.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(body),
        )
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| ClientError::Protocol(e.to_string()))?
            .into_parts();
        all.extend(instructions.headers().map(|(k, v)| (k.to_owned(), v.to_owned())));
        Ok(all)
    }

    fn signed(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let host = authority(&self.base);
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path_and_query}", self.base));
        for (k, v) in self.signature(method, host, path_and_query, headers, &body)? {
            if k != "host" {
                request = request.header(k.as_str(), v.as_str());
            }
        }
        request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// A TCS frame as the agent sends it on the channel opened at `url`: the signed header
    /// block of a GET of that URL with `body`, a blank line, then `body`.
    pub fn telemetry_frame(&self, url: &str, body: &str) -> Result<String, ClientError> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| ClientError::Protocol(format!("not a ws:// URL: {url}")))?;
        let host = authority(url);
        // Signed as the Go agent signs: `+` in the query as `%20`.
        let path_and_query = rest[host.len()..].replace('+', "%20");
        let mut frame = String::new();
        for (k, v) in self.signature("GET", host, &path_and_query, &[], body.as_bytes())? {
            frame.push_str(&format!("{k}: {v}\r\n"));
        }
        frame.push_str("\r\n");
        frame.push_str(body);
        Ok(frame)
    }

    /// Opens a websocket to `url` (`ws://host:port/path?query`, as the agent channels are
    /// reached) with a signed upgrade.
    pub async fn websocket(&self, url: &str) -> Result<WebSocket, ClientError> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| ClientError::Protocol(format!("not a ws:// URL: {url}")))?;
        let host = authority(url);
        let path_and_query = &rest[host.len()..];
        let mut request = url
            .into_client_request()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        // The Go agent's signer reads `+` in a query as a space and signs it as `%20`; so does
        // the server, and so must this.
        let signed_path = path_and_query.replace('+', "%20");
        for (k, v) in self.signature("GET", host, &signed_path, &[], b"")? {
            if k == "host" {
                continue;
            }
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| ClientError::Protocol(e.to_string()))?;
            let value = HeaderValue::from_str(&v).map_err(|e| ClientError::Protocol(e.to_string()))?;
            request.headers_mut().insert(name, value);
        }
        // Small buffers: a simulated fleet holds a channel per instance.
        let config = WebSocketConfig::default()
            .read_buffer_size(ecsd::channels::BUFFER_SIZE)
            .write_buffer_size(ecsd::channels::BUFFER_SIZE);
        let connect = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
        match tokio::time::timeout(self.timeout, connect).await {
            Err(_) => Err(ClientError::Transport(format!("{url} (timed out)"))),
            Ok(Ok((socket, _))) => Ok(socket),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
                // A refused upgrade carries the channel's error message: {"type", "message": {"message"}}.
                let status = response.status().as_u16();
                let error: serde_json::Value = response
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or_default();
                Err(ClientError::Service {
                    code: error["type"].as_str().unwrap_or("Unknown").to_owned(),
                    message: error["message"]["message"].as_str().unwrap_or_default().to_owned(),
                    status,
                })
            }
            Ok(Err(e)) => Err(ClientError::Transport(format!("{url}: {e}"))),
        }
    }

    /// Calls `operation` with `input`.
    /// An API call signed now, as the bytes of an HTTP/1.1 request a load generator can send
    /// as they are (again and again: the signature holds for the clock skew AWS allows).
    pub fn presigned<I: Serialize>(&self, operation: &str, input: &I) -> Result<Vec<u8>, ClientError> {
        let body = serde_json::to_vec(input).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let target = format!("{TARGET_PREFIX}{operation}");
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target.as_str()),
        ];
        let mut out = b"POST / HTTP/1.1\r\n".to_vec();
        for (k, v) in self.signature("POST", authority(&self.base), "/", &headers, &body)? {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    pub async fn call<I: Serialize, O: DeserializeOwned>(&self, operation: &str, input: &I) -> Result<O, ClientError> {
        let body = serde_json::to_vec(input).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let target = format!("{TARGET_PREFIX}{operation}");
        let request = self.signed(
            "POST",
            "/",
            &[
                ("content-type", "application/x-amz-json-1.1"),
                ("x-amz-target", &target),
            ],
            body,
        )?;
        let response = tokio::time::timeout(self.timeout, self.http.request(request))
            .await
            .map_err(|_| ClientError::Transport(format!("{} (timed out)", self.base)))?
            .map_err(|e| ClientError::Transport(format!("{}: {e}", self.base)))?;
        let status = response.status().as_u16();
        let bytes = tokio::time::timeout(self.timeout, response.into_body().collect())
            .await
            .map_err(|_| ClientError::Transport(format!("{} (timed out)", self.base)))?
            .map_err(|e| ClientError::Transport(e.to_string()))?
            .to_bytes();
        if status == 200 {
            return serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()));
        }
        let error: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        Err(ClientError::Service {
            code: error["__type"]
                .as_str()
                .unwrap_or("Unknown")
                .rsplit('#')
                .next()
                .unwrap_or_default()
                .to_owned(),
            message: error["message"].as_str().unwrap_or_default().to_owned(),
            status,
        })
    }

    /// A signed GET, answered with the response head and its streaming body.
    pub async fn get(
        &self,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let request = self.signed("GET", path_and_query, headers, Vec::new())?;
        tokio::time::timeout(self.timeout, self.http.request(request))
            .await
            .map_err(|_| ClientError::Transport(format!("{} (timed out)", self.base)))?
            .map_err(|e| ClientError::Transport(format!("{}: {e}", self.base)))
    }
}
