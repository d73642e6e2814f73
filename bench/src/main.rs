//! `ecsd-bench`: drives ecsd, moto's server and a bare HTTP server (axum answering a fixed body,
//! the ceiling of this machine) over loopback with signed ECS API requests, and prints
//! requests/s, p50/p99 latency, server CPU and peak RSS per scenario and concurrency, with
//! ratios measured in the same run. `scripts/bench` builds it and sets up moto.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod wrk;

use clap::Parser;
use ecsd_agent::client::{Credentials, EcsClient};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

#[derive(Parser)]
struct Args {
    /// The ecsd binary to measure (a release build).
    #[arg(long, default_value = "target/release/ecsd")]
    ecsd: PathBuf,
    /// A Python with moto installed; without it moto is left out.
    #[arg(long)]
    moto_python: Option<PathBuf>,
    /// Seconds per scenario and concurrency.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Concurrency levels.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Tasks in the large cluster of the ListTasks scenario.
    #[arg(long, default_value_t = 100_000)]
    large: usize,
    /// Simulated agents in the mixed fleet scenario.
    #[arg(long, default_value_t = 1000)]
    fleet: usize,
    /// Tasks of the service in the services scenario, and the simulated instances they run on.
    #[arg(long, default_value_t = 1000)]
    service_tasks: usize,
    #[arg(long, default_value_t = 100)]
    service_instances: usize,
    /// Stored-task counts at which memory and disk use are measured.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    growth: Vec<usize>,
    /// Also measure SubmitTaskStateChange on PostgreSQL (this URL's database is wiped), one
    /// process and two.
    #[arg(long)]
    postgres: Option<String>,
    /// Measure only one part: the pre-signed hot path against the bare server, or the
    /// PostgreSQL scenarios (with `--postgres`).
    #[arg(long, value_enum)]
    only: Option<Only>,
    /// Run the bare HTTP server (internal: the baseline process).
    #[arg(long, hide = true)]
    baseline_server: bool,
    /// Replay the pre-signed requests of this plan (internal: the load process).
    #[arg(long, hide = true)]
    load: Option<PathBuf>,
}

/// A part of the benchmark that can be run alone.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Only {
    HotPath,
    Postgres,
}

fn credentials() -> Credentials {
    Credentials {
        access_key_id: "test".into(),
        secret_access_key: "test".into(),
        region: "us-east-1".into(),
    }
}

/// A server process being measured.
struct Target {
    name: &'static str,
    url: String,
    child: Child,
}

impl Target {
    async fn start(name: &'static str, mut command: Command, ready: &str) -> Target {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let line = lines.next_line().await.unwrap().expect("prints its address");
            if let Some(rest) = line.split(ready).nth(1) {
                break rest.trim().trim_end_matches('/').to_owned();
            }
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Target { name, url, child }
    }

    fn client(&self) -> EcsClient {
        EcsClient::new(&self.url, credentials())
    }

    /// Seconds of CPU and peak RSS (MiB) of the process so far.
    fn usage(&self) -> (f64, f64) {
        let pid = self.child.id().unwrap_or(0);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
            + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let peak_kib: f64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        (ticks / 100.0, peak_kib / 1024.0)
    }

    fn rss_now(&self) -> f64 {
        let pid = self.child.id().unwrap_or(0);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    }
}

async fn start_ecsd(args: &Args, data: &std::path::Path, store: Option<&str>) -> Target {
    let mut command = Command::new(&args.ecsd);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--no-throttle", "--data-dir"])
        .arg(data);
    if let Some(url) = store {
        command.args(["--store", url]);
    }
    command.env("ECSD_LOG", "warn");
    Target::start("ecsd", command, "listening on ").await
}

/// One measured run: requests/s, p50 and p99 in ms, server CPU %, peak RSS MiB.
#[derive(Clone, Copy, Default)]
struct Figures {
    rps: f64,
    p50: f64,
    p99: f64,
    cpu: f64,
    rss: f64,
}

/// Runs `request(worker, i)` from `concurrency` workers for `seconds`.
async fn measure<F, Fut>(targets: &[&Target], seconds: f64, concurrency: usize, request: F) -> Figures
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let request = Arc::new(request);
    let before: Vec<(f64, f64)> = targets.iter().map(|t| t.usage()).collect();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let request = request.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut i = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                if request(w, i).await {
                    latencies.push(t.elapsed().as_micros() as u32);
                } else {
                    errors += 1;
                }
                i += 1;
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.await.unwrap();
        all.extend(l);
        errors += e;
    }
    let wall = start.elapsed().as_secs_f64();
    if errors > 0 {
        eprintln!("  ({errors} failed requests)");
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    let after: Vec<(f64, f64)> = targets.iter().map(|t| t.usage()).collect();
    let cpu: f64 = after.iter().zip(&before).map(|(a, b)| a.0 - b.0).sum();
    Figures {
        rps: all.len() as f64 / wall,
        p50: pct(0.5),
        p99: pct(0.99),
        cpu: cpu / wall * 100.0,
        rss: after.iter().map(|a| a.1).sum(),
    }
}

fn row(scenario: &str, target: &str, concurrency: usize, f: &Figures, ratio: Option<(&str, f64)>) {
    let ratio = ratio.map_or(String::new(), |(what, r)| format!("{r:>7.2}x {what}"));
    println!(
        "| {scenario:<34} | {target:<9} | {concurrency:>3} | {:>9.0} | {:>7.2} | {:>7.2} | {:>5.0}% | {:>6.0} | {ratio} |",
        f.rps, f.p50, f.p99, f.cpu, f.rss
    );
}

/// Replays `connections` (each an index of `targets` and its pre-signed requests) from the load
/// process, with the servers' CPU over the run.
async fn replay(
    targets: &[&Target],
    seconds: f64,
    connections: Vec<(usize, Vec<Vec<u8>>)>,
    scratch: &std::path::Path,
) -> Figures {
    let me = std::env::current_exe().unwrap();
    let plan = wrk::Plan {
        seconds,
        connections: connections
            .into_iter()
            .map(|(t, requests)| (targets[t].url.trim_start_matches("http://").to_owned(), requests))
            .collect(),
    };
    let before: Vec<(f64, f64)> = targets.iter().map(|t| t.usage()).collect();
    let start = Instant::now();
    let measured = plan.run(&me, scratch).await;
    let wall = start.elapsed().as_secs_f64().max(seconds);
    if measured.errors > 0 {
        eprintln!("  ({} failed requests)", measured.errors);
    }
    let after: Vec<(f64, f64)> = targets.iter().map(|t| t.usage()).collect();
    let cpu: f64 = after.iter().zip(&before).map(|(a, b)| a.0 - b.0).sum();
    eprintln!("  (the load process used {:.0}% CPU)", measured.load_cpu * 100.0);
    Figures {
        rps: measured.rps,
        p50: measured.p50,
        p99: measured.p99,
        cpu: cpu / wall * 100.0,
        rss: after.iter().map(|a| a.1).sum(),
    }
}

/// Each of `c` connections' requests: `make(connection, k)` signed, for k in 0..per.
fn presign(
    client: &EcsClient,
    c: usize,
    per: usize,
    make: impl Fn(usize, usize) -> (&'static str, Value),
) -> Vec<Vec<Vec<u8>>> {
    (0..c)
        .map(|w| {
            (0..per)
                .map(|k| {
                    let (operation, input) = make(w, k);
                    client.presigned(operation, &input).expect("signs")
                })
                .collect()
        })
        .collect()
}

async fn ok<T>(r: Result<T, ecsd_agent::client::ClientError>) -> bool {
    r.is_ok()
}

fn resources(cpu: i64, memory: i64) -> Value {
    json!([{"name": "CPU", "type": "INTEGER", "integerValue": cpu}, {"name": "MEMORY", "type": "INTEGER", "integerValue": memory}])
}

/// A cluster with `instances` instances and a small task definition; moto wants an identity
/// document.
async fn setup(client: &EcsClient, cluster: &str, instances: usize) -> Vec<String> {
    client
        .call::<_, Value>("CreateCluster", &json!({"clusterName": cluster}))
        .await
        .unwrap();
    client
        .call::<_, Value>(
            "RegisterTaskDefinition",
            &json!({"family": "bench", "containerDefinitions": [
                {"name": "app", "image": "nginx", "cpu": 1, "memory": 6, "portMappings": [{"containerPort": 80}]},
                {"name": "log", "image": "fluent-bit", "cpu": 1, "memory": 6, "essential": false}]}),
        )
        .await
        .unwrap();
    let mut arns = Vec::new();
    for i in 0..instances {
        let document =
            json!({"instanceId": format!("i-{i:017x}"), "region": "us-east-1", "availabilityZone": "us-east-1a"})
                .to_string();
        let answer: Value = client
            .call(
                "RegisterContainerInstance",
                &json!({"cluster": cluster, "totalResources": resources(1 << 30, 1 << 30),
                        "instanceIdentityDocument": document}),
            )
            .await
            .unwrap();
        arns.push(
            answer["containerInstance"]["containerInstanceArn"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    arns
}

async fn run_tasks(client: &EcsClient, cluster: &str, n: usize) -> Vec<String> {
    let mut tasks = Vec::new();
    while tasks.len() < n {
        let count = (n - tasks.len()).min(10);
        let answer: Value = client
            .call(
                "RunTask",
                &json!({"cluster": cluster, "taskDefinition": "bench", "count": count}),
            )
            .await
            .unwrap();
        tasks.extend(
            answer["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["taskArn"].as_str().unwrap().to_owned()),
        );
    }
    tasks
}

/// moto registers only container instances of EC2 instances it knows: make those through its
/// EC2 API with boto3, which moto's server package brings.
async fn setup_moto(python: &std::path::Path, url: &str, cluster: &str, instances: usize) {
    const SCRIPT: &str = r#"
import json, sys, boto3
url, cluster, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
kw = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
ec2, ecs = boto3.client("ec2", **kw), boto3.client("ecs", **kw)
ecs.create_cluster(clusterName=cluster)
ecs.register_task_definition(family="bench", containerDefinitions=[
    {"name": "app", "image": "nginx", "cpu": 1, "memory": 6, "portMappings": [{"containerPort": 80}]},
    {"name": "log", "image": "fluent-bit", "cpu": 1, "memory": 6, "essential": False}])
for instance in ec2.run_instances(ImageId="ami-12c6146b", MinCount=n, MaxCount=n)["Instances"]:
    document = json.dumps({"instanceId": instance["InstanceId"], "region": "us-east-1"})
    ecs.register_container_instance(cluster=cluster, instanceIdentityDocument=document, totalResources=[
        {"name": "CPU", "type": "INTEGER", "integerValue": 1 << 30},
        {"name": "MEMORY", "type": "INTEGER", "integerValue": 1 << 30}])
"#;
    let status = Command::new(python)
        .args(["-c", SCRIPT, url, cluster, &instances.to_string()])
        .status()
        .await
        .expect("runs python");
    assert!(status.success(), "moto setup failed");
}

/// Fills a cluster with `n` stopped tasks as fast as the API takes them (16 at a time).
async fn fill(client: &EcsClient, cluster: &str, n: usize) {
    let per = n.div_ceil(16);
    let mut workers = Vec::new();
    for _ in 0..16 {
        let client = client.clone();
        let cluster = cluster.to_owned();
        workers.push(tokio::spawn(async move {
            for arn in run_tasks(&client, &cluster, per).await {
                let _ = client
                    .call::<_, Value>(
                        "SubmitTaskStateChange",
                        &json!({"cluster": cluster, "task": arn, "status": "STOPPED"}),
                    )
                    .await;
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
}

fn report(cluster: &str, task: &str, round: u64) -> Value {
    // Alternating host ports make every report a change: each one is a durable write.
    let port = 32768 + (round % 2) as i32;
    json!({"cluster": cluster, "task": task, "status": "RUNNING", "containers": [
        {"containerName": "app", "status": "RUNNING", "runtimeId": "4f1c0ffee", "networkBindings": [
            {"bindIP": "0.0.0.0", "containerPort": 80, "hostPort": port, "protocol": "tcp"}]},
        {"containerName": "log", "status": "RUNNING", "runtimeId": "4f1c0ffef", "networkBindings": []}]})
}

fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|d| d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

fn main() {
    let args = Args::parse();
    // The load process runs on one thread of its own, outside the benchmark's runtime.
    if let Some(plan) = &args.load {
        wrk::load(plan);
        return;
    }
    tokio::runtime::Runtime::new().unwrap().block_on(bench(args));
}

async fn bench(args: Args) {
    if args.baseline_server {
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(|| async {
                (
                    [("content-type", "application/x-amz-json-1.1")],
                    "{\"acknowledgment\":\"ACK\"}",
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("baseline listening on http://{}", listener.local_addr().unwrap());
        axum::serve(listener, app).await.unwrap();
        return;
    }
    let scratch = std::env::temp_dir().join(format!("ecsd-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    println!(
        "machine: {} cores; {} s per run\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.seconds
    );
    println!("| scenario                           | target    |   c |     req/s | p50 ms  | p99 ms  |  CPU  | RSS MB | ratio |");
    println!("|------------------------------------|-----------|-----|-----------|---------|---------|-------|--------|-------|");

    if args.only == Some(Only::Postgres) {
        let Some(url) = &args.postgres else {
            eprintln!("--only postgres needs --postgres URL");
            std::process::exit(2);
        };
        let c = args.concurrency.iter().copied().max().unwrap_or(1);
        on_postgres(&args, url, &scratch, c).await;
        let _ = std::fs::remove_dir_all(&scratch);
        return;
    }
    let me = std::env::current_exe().unwrap();
    let mut baseline_cmd = Command::new(&me);
    baseline_cmd.arg("--baseline-server");
    let baseline = Target::start("baseline", baseline_cmd, "listening on ").await;
    let ecsd = start_ecsd(&args, &scratch.join("ecsd"), None).await;
    let client = ecsd.client();
    setup(&client, "submit", 1).await;
    let max_c = args.concurrency.iter().copied().max().unwrap_or(1);
    let tasks = Arc::new(run_tasks(&client, "submit", max_c).await);
    if args.only == Some(Only::HotPath) {
        hot_path(&args, &baseline, &ecsd, &tasks, &scratch).await;
        let _ = std::fs::remove_dir_all(&scratch);
        return;
    }
    let moto = match &args.moto_python {
        Some(python) => {
            let mut command = Command::new(python);
            command.args(["-c", "import sys; from moto.server import main; print('moto listening on http://127.0.0.1:5123', flush=True); main(['-p', '5123'])"]);
            let target = Target::start("moto", command, "listening on ").await;
            // moto prints before it binds; wait for it to answer.
            for _ in 0..100 {
                if target
                    .client()
                    .call::<_, Value>("ListClusters", &json!({}))
                    .await
                    .is_ok()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Some(target)
        }
        None => None,
    };

    // 1. SubmitTaskStateChange, against the bare ceiling.
    for &c in &args.concurrency {
        let b = baseline.client();
        let f = measure(&[&baseline], args.seconds, c, move |_, _| {
            let b = b.clone();
            async move { ok(b.call::<_, Value>("SubmitTaskStateChange", &json!({})).await).await }
        })
        .await;
        row("bare HTTP (fixed body)", "baseline", c, &f, None);
        let ceiling = f;
        let (cl, t) = (client.clone(), tasks.clone());
        let f = measure(&[&ecsd], args.seconds, c, move |w, i| {
            let (cl, t) = (cl.clone(), t.clone());
            async move {
                ok(cl
                    .call::<_, Value>("SubmitTaskStateChange", &report("submit", &t[w], i))
                    .await)
                .await
            }
        })
        .await;
        row(
            "SubmitTaskStateChange (durable)",
            "ecsd",
            c,
            &f,
            Some(("of bare", f.rps / ceiling.rps.max(1.0))),
        );
    }

    // 1b. Pre-signed requests replayed by the load process.
    hot_path(&args, &baseline, &ecsd, &tasks, &scratch).await;

    // 2-4. Describe, list and run, against moto where it has the operation.
    let targets: Vec<&Target> = std::iter::once(&ecsd).chain(moto.iter()).collect();
    let mut prepared = Vec::new();
    for target in &targets {
        let c = target.client();
        match (target.name, &args.moto_python) {
            ("moto", Some(python)) => setup_moto(python, &target.url, "read", 100).await,
            _ => drop(setup(&c, "read", 100).await),
        }
        let tasks = run_tasks(&c, "read", 1000).await;
        prepared.push((c, Arc::new(tasks)));
    }
    type Scenario = (
        &'static str,
        fn(EcsClient, Arc<Vec<String>>, u64) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>,
    );
    let scenarios: [Scenario; 4] = [
        ("DescribeTasks (1 task)", |c, t, i| {
            Box::pin(async move {
                ok(c.call::<_, Value>(
                    "DescribeTasks",
                    &json!({"cluster": "read", "tasks": [t[(i as usize) % t.len()]]}),
                )
                .await)
                .await
            })
        }),
        ("DescribeTasks (100 tasks)", |c, t, i| {
            let start = (i as usize * 100) % (t.len() - 100);
            Box::pin(async move {
                ok(c.call::<_, Value>(
                    "DescribeTasks",
                    &json!({"cluster": "read", "tasks": t[start..start + 100]}),
                )
                .await)
                .await
            })
        }),
        ("ListTasks (1,000 tasks, first page)", |c, _, _| {
            Box::pin(async move { ok(c.call::<_, Value>("ListTasks", &json!({"cluster": "read"})).await).await })
        }),
        ("RunTask (count 1, 100 instances)", |c, _, _| {
            Box::pin(async move {
                ok(
                    c.call::<_, Value>("RunTask", &json!({"cluster": "read", "taskDefinition": "bench"}))
                        .await,
                )
                .await
            })
        }),
    ];
    for (name, request) in scenarios {
        for &c in &args.concurrency {
            let mut figures = Vec::new();
            for (target, (client, tasks)) in targets.iter().zip(&prepared) {
                let (cl, t) = (client.clone(), tasks.clone());
                let f = measure(&[target], args.seconds, c, move |_, i| {
                    request(cl.clone(), t.clone(), i)
                })
                .await;
                figures.push((target.name, f));
            }
            let moto_rps = figures.iter().find(|(n, _)| *n == "moto").map(|(_, f)| f.rps);
            for (target, f) in &figures {
                let ratio = match (*target, moto_rps) {
                    ("ecsd", Some(m)) => Some(("moto", f.rps / m.max(0.001))),
                    _ => None,
                };
                row(name, target, c, f, ratio);
            }
        }
    }

    // 3. ListTasks on a large cluster: first page and a deep page, against the 1,000-task one.
    let client = ecsd.client();
    setup(&client, "large", 10).await;
    fill(&client, "large", args.large).await;
    let mut token: Option<String> = None;
    for _ in 0..(args.large / 100 / 2) {
        let mut request = json!({"cluster": "large", "desiredStatus": "STOPPED"});
        if let Some(t) = &token {
            request["nextToken"] = json!(t);
        }
        let page: Value = client.call("ListTasks", &request).await.unwrap();
        token = page["nextToken"].as_str().map(str::to_owned);
    }
    let deep = Arc::new(token);
    for &c in &args.concurrency {
        for (label, deep_page) in [("first page", false), ("deep page", true)] {
            let (cl, d) = (client.clone(), deep.clone());
            let f = measure(&[&ecsd], args.seconds, c, move |_, _| {
                let (cl, d) = (cl.clone(), d.clone());
                async move {
                    let mut request = json!({"cluster": "large", "desiredStatus": "STOPPED"});
                    if deep_page {
                        request["nextToken"] = json!(*d);
                    }
                    ok(cl.call::<_, Value>("ListTasks", &request).await).await
                }
            })
            .await;
            row(
                &format!("ListTasks ({} tasks, {label})", args.large),
                "ecsd",
                c,
                &f,
                None,
            );
        }
    }

    // 5. A fleet of simulated agents, connected over ACS, reporting while clients run, describe and list.
    let fleet = start_ecsd(&args, &scratch.join("fleet"), None).await;
    let client = fleet.client();
    setup(&client, "fleet", 0).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let agents = tokio::spawn(ecsd_agent::sim::run(
        ecsd_agent::sim::SimOptions {
            endpoint: fleet.url.clone(),
            cluster: "fleet".into(),
            instances: args.fleet,
            cpu: 1 << 20,
            memory: 1 << 20,
            credentials: credentials(),
            state_file: None,
            tick: Duration::from_secs(1),
            capacity_provider: None,
        },
        stopped,
    ));
    loop {
        let listed: Value = client
            .call(
                "ListContainerInstances",
                &json!({"cluster": "fleet", "maxResults": 100}),
            )
            .await
            .unwrap_or_default();
        let registered = client
            .call::<_, Value>("DescribeClusters", &json!({"clusters": ["fleet"]}))
            .await
            .ok()
            .and_then(|c| c["clusters"][0]["registeredContainerInstancesCount"].as_u64())
            .unwrap_or(0);
        if registered as usize >= args.fleet || listed.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seeded = Arc::new(run_tasks(&client, "fleet", 100).await);
    for &c in &args.concurrency {
        let (cl, t) = (client.clone(), seeded.clone());
        let f = measure(&[&fleet], args.seconds, c, move |_, i| {
            let (cl, t) = (cl.clone(), t.clone());
            async move {
                let request = match i % 3 {
                    0 => {
                        cl.call::<_, Value>("RunTask", &json!({"cluster": "fleet", "taskDefinition": "bench"}))
                            .await
                    }
                    1 => {
                        cl.call::<_, Value>(
                            "DescribeTasks",
                            &json!({"cluster": "fleet", "tasks": [t[(i as usize) % t.len()]]}),
                        )
                        .await
                    }
                    _ => cl.call::<_, Value>("ListTasks", &json!({"cluster": "fleet"})).await,
                };
                ok(request).await
            }
        })
        .await;
        row(
            &format!("mixed clients, {} agents reporting", args.fleet),
            "ecsd",
            c,
            &f,
            None,
        );
    }
    let _ = stop.send(true);
    let _ = agents.await;

    // 6. A service: from CreateService to a steady state, then a full rolling deployment.
    services(&args, &scratch).await;

    // Memory and storage as tasks accumulate.
    println!("\n| stored tasks | RSS MB | on disk MB |\n|---|---|---|");
    let growth = start_ecsd(&args, &scratch.join("growth"), None).await;
    let client = growth.client();
    setup(&client, "growth", 10).await;
    let mut stored = 0;
    for &n in &args.growth {
        fill(&client, "growth", n - stored).await;
        stored = n;
        println!(
            "| {n} | {:.0} | {:.1} |",
            growth.rss_now(),
            dir_size(&scratch.join("growth")) as f64 / 1048576.0
        );
    }

    if let Some(url) = &args.postgres {
        on_postgres(&args, url, &scratch, max_c).await;
    }
    let _ = std::fs::remove_dir_all(&scratch);
}

/// Pre-signed requests replayed by the load process, so that the server is what is measured:
/// the bare ceiling, DescribeTasks of one task, the durable report (to `tasks`, of the cluster
/// `submit`), each with its ratio to the ceiling.
async fn hot_path(args: &Args, baseline: &Target, ecsd: &Target, tasks: &[String], scratch: &std::path::Path) {
    let client = ecsd.client();
    for &c in &args.concurrency {
        let replayed = |r: Vec<Vec<Vec<u8>>>| r.into_iter().map(|r| (0, r)).collect::<Vec<_>>();
        let bare = presign(&baseline.client(), c, 1, |_, _| ("SubmitTaskStateChange", json!({})));
        let ceiling = replay(&[baseline], args.seconds, replayed(bare), scratch).await;
        row("bare HTTP, pre-signed", "baseline", c, &ceiling, None);
        let of_bare = |f: &Figures| Some(("of bare", f.rps / ceiling.rps.max(1.0)));
        let describe = presign(&client, c, 8, |w, k| {
            (
                "DescribeTasks",
                json!({"cluster": "submit", "tasks": [tasks[(w + k) % tasks.len()]]}),
            )
        });
        let f = replay(&[ecsd], args.seconds, replayed(describe), scratch).await;
        row("DescribeTasks (1 task), pre-signed", "ecsd", c, &f, of_bare(&f));
        let submit = presign(&client, c, 2, |w, k| {
            ("SubmitTaskStateChange", report("submit", &tasks[w], k as u64))
        });
        let f = replay(&[ecsd], args.seconds, replayed(submit), scratch).await;
        row("SubmitTaskStateChange, pre-signed", "ecsd", c, &f, of_bare(&f));
    }
}

/// SubmitTaskStateChange on PostgreSQL, one process and two, against what the database server
/// itself sustains (pgbench's simple-update transactions at the same concurrency), and RunTask.
async fn on_postgres(args: &Args, url: &str, scratch: &std::path::Path, c: usize) {
    let pgbench = pgbench(url, c, args.seconds).await;
    println!(
        "\n| on PostgreSQL | processes | c | req/s | p50 ms | p99 ms | CPU | ratio |\n|---|---|---|---|---|---|---|---|"
    );
    match pgbench {
        Some(tps) => println!("| pgbench -N (simple update) | | {c} | {tps:.0} | | | | |"),
        None => println!("| pgbench -N (simple update) | | {c} | (pgbench not found or failed) | | | | |"),
    }
    for processes in [1usize, 2] {
        wipe(url).await;
        let mut servers = Vec::new();
        for p in 0..processes {
            servers.push(start_ecsd(args, &scratch.join(format!("pg{p}")), Some(url)).await);
        }
        let clients: Vec<EcsClient> = servers.iter().map(Target::client).collect();
        // A cluster per process: writes to different clusters.
        let mut tasks = Vec::new();
        for (p, client) in clients.iter().enumerate() {
            let cluster = format!("pg{p}");
            setup(client, &cluster, 1).await;
            tasks.push(run_tasks(client, &cluster, c.div_ceil(processes)).await);
        }
        let connections = (0..c)
            .map(|w| {
                let p = w % processes;
                let task = &tasks[p][w / processes];
                let cluster = format!("pg{p}");
                let requests = (0..2)
                    .map(|k| {
                        let report = report(&cluster, task, k);
                        clients[p].presigned("SubmitTaskStateChange", &report).expect("signs")
                    })
                    .collect();
                (p, requests)
            })
            .collect();
        let refs: Vec<&Target> = servers.iter().collect();
        let f = replay(&refs, args.seconds, connections, scratch).await;
        let ratio = pgbench.map(|tps| ("of pgbench", f.rps / tps.max(1.0)));
        let ratio = ratio.map_or(String::new(), |(what, r)| format!("{r:.2}x {what}"));
        println!(
            "| SubmitTaskStateChange, pre-signed | {processes} | {c} | {:.0} | {:.2} | {:.2} | {:.0}% | {ratio} |",
            f.rps, f.p50, f.p99, f.cpu
        );
        if processes == 1 {
            setup(&clients[0], "pgrun", 100).await;
            let run = presign(&clients[0], c, 1, |_, _| {
                ("RunTask", json!({"cluster": "pgrun", "taskDefinition": "bench"}))
            });
            let f = replay(&refs, args.seconds, run.into_iter().map(|r| (0, r)).collect(), scratch).await;
            println!(
                "| RunTask (count 1, 100 instances), pre-signed | 1 | {c} | {:.0} | {:.2} | {:.2} | {:.0}% | |",
                f.rps, f.p50, f.p99, f.cpu
            );
        }
    }
}

/// pgbench's simple-update transactions per second at concurrency `c` on the database of
/// `url` (its tables made and dropped here), if pgbench is installed.
async fn pgbench(url: &str, c: usize, seconds: f64) -> Option<f64> {
    let run = |args: Vec<String>| async move {
        let output = Command::new("pgbench").args(&args).output().await.ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    };
    run(vec!["-q".into(), "-i".into(), "-s".into(), "10".into(), url.into()]).await?;
    let seconds = (seconds.ceil() as u64).max(1).to_string();
    let clients = c.to_string();
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get()).to_string();
    let out = run(vec![
        "-N".into(),
        "-c".into(),
        clients,
        "-j".into(),
        jobs,
        "-T".into(),
        seconds,
        url.into(),
    ])
    .await;
    let _ = run(vec!["-q".into(), "-i".into(), "-I".into(), "d".into(), url.into()]).await;
    out?.lines()
        .find(|l| l.starts_with("tps = "))?
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

/// How long a service of `service_tasks` tasks on `service_instances` simulated instances takes
/// to reach a steady state after CreateService, and after a new task definition rolls (maximum
/// 200%, minimum 100%), with the server's CPU over each.
async fn services(args: &Args, scratch: &std::path::Path) {
    let server = start_ecsd(args, &scratch.join("services"), None).await;
    let client = server.client();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let agents = tokio::spawn(ecsd_agent::sim::run(
        ecsd_agent::sim::SimOptions {
            endpoint: server.url.clone(),
            cluster: "svc".into(),
            instances: args.service_instances,
            cpu: 1 << 20,
            memory: 1 << 20,
            credentials: credentials(),
            state_file: None,
            tick: Duration::from_millis(500),
            capacity_provider: None,
        },
        stopped,
    ));
    while client
        .call::<_, Value>("DescribeClusters", &json!({"clusters": ["svc"]}))
        .await
        .ok()
        .and_then(|c| c["clusters"][0]["registeredContainerInstancesCount"].as_u64())
        .unwrap_or(0)
        < args.service_instances as u64
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let register = |image: &'static str| {
        let client = client.clone();
        async move {
            let definition = json!({"family": "svc", "containerDefinitions": [
                {"name": "app", "image": image, "memory": 16, "cpu": 8}]});
            client
                .call::<_, Value>("RegisterTaskDefinition", &definition)
                .await
                .expect("registers");
        }
    };
    let steady = |client: EcsClient| async move {
        loop {
            let described: Value = client
                .call("DescribeServices", &json!({"cluster": "svc", "services": ["svc"]}))
                .await
                .unwrap_or_default();
            let s = &described["services"][0];
            if s["deployments"].as_array().map(Vec::len) == Some(1) && s["runningCount"] == s["desiredCount"] {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    println!(
        "\n| service of {} tasks on {} instances | seconds | server CPU s |\n|---|---|---|",
        args.service_tasks, args.service_instances
    );
    register("app:1").await;
    let (cpu_before, _) = server.usage();
    let started = Instant::now();
    client
        .call::<_, Value>(
            "CreateService",
            &json!({"cluster": "svc", "serviceName": "svc", "taskDefinition": "svc", "desiredCount": args.service_tasks}),
        )
        .await
        .expect("the service is created");
    steady(client.clone()).await;
    let (cpu_created, _) = server.usage();
    println!(
        "| CreateService to steady state | {:.1} | {:.1} |",
        started.elapsed().as_secs_f64(),
        cpu_created - cpu_before
    );
    register("app:2").await;
    let started = Instant::now();
    client
        .call::<_, Value>(
            "UpdateService",
            &json!({"cluster": "svc", "service": "svc", "taskDefinition": "svc"}),
        )
        .await
        .expect("the service is updated");
    steady(client.clone()).await;
    let (cpu_rolled, _) = server.usage();
    println!(
        "| rolling deployment to steady state | {:.1} | {:.1} |",
        started.elapsed().as_secs_f64(),
        cpu_rolled - cpu_created
    );
    let _ = stop.send(true);
    let _ = agents.await;
}

/// Empties the benchmark's PostgreSQL database.
async fn wipe(url: &str) {
    let status = Command::new("psql")
        .args([
            url,
            "-qc",
            "SET client_min_messages = warning; DROP SCHEMA public CASCADE; CREATE SCHEMA public;",
        ])
        .stdout(Stdio::null())
        .status()
        .await;
    assert!(status.is_ok_and(|s| s.success()), "cannot reset {url}");
}
