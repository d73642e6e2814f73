//! The wrk-style mode: requests signed once, written to a file, and replayed by one light load
//! process (`ecsd-bench --load FILE`, a single-threaded runtime writing the stored bytes on
//! keep-alive connections and reading just enough of each answer), so that what is measured is
//! the server, not the client's signing and JSON.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the load process is told: for how long, and for each connection the address it opens
/// and its requests (sent in turn, over and over).
pub struct Plan {
    pub seconds: f64,
    pub connections: Vec<(String, Vec<Vec<u8>>)>,
}

/// What the load process measured.
pub struct Measured {
    pub rps: f64,
    pub p50: f64,
    pub p99: f64,
    pub errors: u64,
    /// CPU seconds the load process used per second of the run.
    pub load_cpu: f64,
}

impl Plan {
    fn to_json(&self) -> Value {
        let text = |r: &Vec<u8>| String::from_utf8_lossy(r).into_owned();
        let connections: Vec<Value> = self
            .connections
            .iter()
            .map(|(addr, requests)| json!({"addr": addr, "requests": requests.iter().map(text).collect::<Vec<_>>()}))
            .collect();
        json!({"seconds": self.seconds, "connections": connections})
    }

    /// Runs the plan in a load process of its own and reads what it measured.
    pub async fn run(&self, me: &Path, scratch: &Path) -> Measured {
        std::fs::create_dir_all(scratch).unwrap();
        let file = scratch.join("load.json");
        std::fs::write(&file, self.to_json().to_string()).unwrap();
        let output = tokio::process::Command::new(me)
            .arg("--load")
            .arg(&file)
            .output()
            .await
            .expect("the load process runs");
        assert!(
            output.status.success(),
            "the load process failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let answer: Value = serde_json::from_slice(&output.stdout).expect("the load process answers JSON");
        let f = |k: &str| answer[k].as_f64().unwrap_or(0.0);
        Measured {
            rps: f("rps"),
            p50: f("p50"),
            p99: f("p99"),
            errors: answer["errors"].as_u64().unwrap_or(0),
            load_cpu: f("cpu"),
        }
    }
}

/// The load process: replays the plan in `file` and prints what it measured as JSON.
pub fn load(file: &Path) {
    let plan: Value = serde_json::from_slice(&std::fs::read(file).expect("the plan is readable")).expect("JSON");
    let seconds = plan["seconds"].as_f64().unwrap();
    let connections: Vec<(String, Vec<Vec<u8>>)> = plan["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let requests = c["requests"].as_array().unwrap();
            let requests = requests.iter().map(|r| r.as_str().unwrap().as_bytes().to_vec());
            (c["addr"].as_str().unwrap().to_owned(), requests.collect())
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cpu_before = cpu_seconds();
    let (mut latencies, errors, wall) = runtime.block_on(async move {
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let start = Instant::now();
        let workers: Vec<_> = connections
            .into_iter()
            .map(|(addr, requests)| tokio::spawn(connection(addr, requests, deadline)))
            .collect();
        let (mut all, mut errors) = (Vec::new(), 0u64);
        for w in workers {
            let (l, e) = w.await.unwrap();
            all.extend(l);
            errors += e;
        }
        (all, errors, start.elapsed().as_secs_f64())
    });
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    println!(
        "{}",
        json!({
            "rps": latencies.len() as f64 / wall,
            "p50": pct(0.5),
            "p99": pct(0.99),
            "errors": errors,
            "cpu": (cpu_seconds() - cpu_before) / wall,
        })
    );
}

/// One keep-alive connection sending its requests in turn until the deadline: latencies (µs) of
/// the 200s, and how many answers were not 200 (a dropped connection is reopened).
async fn connection(addr: String, requests: Vec<Vec<u8>>, deadline: Instant) -> (Vec<u32>, u64) {
    let (mut latencies, mut errors) = (Vec::new(), 0u64);
    let mut buf = vec![0u8; 64 * 1024];
    let mut i = 0usize;
    'connect: while Instant::now() < deadline {
        let Ok(mut stream) = TcpStream::connect(&addr).await else {
            errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        while Instant::now() < deadline {
            let t = Instant::now();
            if stream.write_all(&requests[i % requests.len()]).await.is_err() {
                errors += 1;
                continue 'connect;
            }
            i += 1;
            match read_answer(&mut stream, &mut buf).await {
                Some(200) => latencies.push(t.elapsed().as_micros() as u32),
                Some(_) => errors += 1,
                None => {
                    errors += 1;
                    continue 'connect;
                }
            }
        }
    }
    (latencies, errors)
}

/// Reads one HTTP/1.1 answer (head, then `content-length` bytes of body); its status.
async fn read_answer(stream: &mut TcpStream, buf: &mut [u8]) -> Option<u16> {
    let mut filled = 0;
    let (head_end, status, length) = loop {
        let n = stream.read(&mut buf[filled..]).await.ok()?;
        if n == 0 {
            return None;
        }
        filled += n;
        if let Some(end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).ok()?;
            let status = head.split(' ').nth(1)?.parse().ok()?;
            let length = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0usize);
            break (end + 4, status, length);
        }
        if filled == buf.len() {
            return None;
        }
    };
    let mut rest = (head_end + length).saturating_sub(filled);
    let size = buf.len();
    while rest > 0 {
        let n = stream.read(&mut buf[..rest.min(size)]).await.ok()?;
        if n == 0 {
            return None;
        }
        rest -= n;
    }
    Some(status)
}

/// CPU seconds this process has used.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}
