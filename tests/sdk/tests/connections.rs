//! Connection and request-head limits against a real server on loopback: idle connections make
//! room for new clients instead of locking them out, one client address cannot take every
//! place, a server whose every connection is busy answers 503 at once, and oversized heads and
//! declared bodies are refused as soon as the head is read. Every flood is bounded in count and
//! time, and stays on 127.0.0.0/8.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::fake_agent::sign_get;
use common::Running;
use ecsd::server::{Limits, Options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn server_with(limits: Limits) -> (Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start_with(Options {
        limits,
        ..common::development(dir.path()).await
    })
    .await;
    (server, dir)
}

fn address(server: &Running) -> SocketAddr {
    server.url.trim_start_matches("http://").parse().unwrap()
}

/// A connection from the loopback address `source` (127.0.0.x) that sends nothing.
async fn idle_from(server: &Running, source: [u8; 4]) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket.connect(address(server)).await.unwrap()
}

/// Whether the server has closed `stream` (reads end of file) within `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 512];
    matches!(
        tokio::time::timeout(wait, stream.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// Sends raw bytes on a new connection and returns what the server answers, up to `wait`.
async fn exchange(server: &Running, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(address(server)).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                break;
            }
        }
    })
    .await;
    String::from_utf8_lossy(&answer).into_owned()
}

async fn health(server: &Running) -> u16 {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    client
        .get(format!("{}/health", server.url))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_idle_connections_than_the_limit_lock_nobody_out() {
    let (server, _dir) = server_with(Limits {
        max_connections: 64,
        ..Limits::default()
    })
    .await;
    let mut flood = Vec::new();
    for _ in 0..200 {
        flood.push(idle_from(&server, [127, 0, 0, 1]).await);
    }
    let started = Instant::now();
    for _ in 0..5 {
        assert_eq!(health(&server).await, 200, "a new client is served at once");
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    // The longest idle made room: the first connections of the flood were closed.
    let mut closed = 0;
    for stream in flood.iter_mut().take(20) {
        if closed_within(stream, Duration::from_millis(500)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 20, "the oldest idle connections were closed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_address_cannot_take_every_place() {
    let (server, _dir) = server_with(Limits {
        max_connections: 64,
        max_connections_per_client: 4,
        ..Limits::default()
    })
    .await;
    let mut neighbour = idle_from(&server, [127, 0, 0, 1]).await;
    let mut greedy = Vec::new();
    for _ in 0..4 {
        greedy.push(idle_from(&server, [127, 0, 0, 2]).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _fifth = idle_from(&server, [127, 0, 0, 2]).await;
    assert!(
        closed_within(&mut greedy[0], Duration::from_secs(2)).await,
        "the client's own longest idle connection made room"
    );
    assert!(
        !closed_within(&mut neighbour, Duration::from_millis(300)).await,
        "another client's connection is left alone"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_connection_is_busy_new_ones_get_a_quick_503() {
    let (server, _dir) = server_with(Limits {
        max_connections: 3,
        ..Limits::default()
    })
    .await;
    // Event streams keep their connections busy for as long as they are open.
    let url = format!("{}/events/stream", server.url);
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut request = reqwest::Client::new().get(&url);
        for (k, v) in sign_get(&url, b"", "test", "test") {
            if k != "Host" {
                request = request.header(k, v);
            }
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        streams.push(response);
    }
    let started = Instant::now();
    let answer = exchange(
        &server,
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("ServiceUnavailableException"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(streams);
    let deadline = Instant::now() + Duration::from_secs(10);
    while health(&server).await != 200 {
        assert!(Instant::now() < deadline, "served again once the streams closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_body_over_the_limit_is_refused_when_the_head_arrives() {
    let (server, _dir) = server_with(Limits::default()).await;
    let started = Instant::now();
    let answer = exchange(
        &server,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: 1000000000000\r\n\r\n{}",
        Duration::from_secs(10),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("RequestEntityTooLargeException"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "at once, not after the body timeout"
    );
    assert_eq!(health(&server).await, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_heads_are_limited_to_64_kib() {
    let (server, _dir) = server_with(Limits::default()).await;
    let head = |size: usize| {
        let start = "GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: ";
        let end = "\r\n\r\n";
        let pad = "p".repeat(size - start.len() - end.len());
        format!("{start}{pad}{end}").into_bytes()
    };
    let fits = exchange(&server, &head(64 * 1024), Duration::from_secs(5)).await;
    assert!(
        fits.starts_with("HTTP/1.1 200"),
        "a 64 KiB head is served: {}",
        &fits[..fits.len().min(200)]
    );
    let over = exchange(&server, &head(64 * 1024 + 1), Duration::from_secs(5)).await;
    assert!(
        over.starts_with("HTTP/1.1 431"),
        "one byte more is refused: {}",
        &over[..over.len().min(200)]
    );
    let far_over = exchange(&server, &head(200 * 1024), Duration::from_secs(5)).await;
    assert!(
        far_over.starts_with("HTTP/1.1 431"),
        "{}",
        &far_over[..far_over.len().min(200)]
    );
    server.stop().await;
}
