//! The `ecsd` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

mod config;

use ecsd::auth::{Keys, Regions};
use ecsd::server::{FargateCapacity, Limits, Options, Range, Retention, ScalingTimings, Server, POOL_CLUSTER};
use ecsd::sessions::Timings;
use ecsd::throttle::{Family, Rate, Throttle};
use ecsd::webhooks;
use ecsd_agent::client::{Credentials, EcsClient};
use ecsd_agent::sim::{self, SimOptions};

/// Request handling allocates many small, short-lived values (JSON documents); mimalloc serves
/// them markedly faster than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(clap::Parser)]
#[command(name = "ecsd", version, about = "An Amazon ECS-compatible control plane")]
struct Cli {
    /// How log lines are written to stderr: text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "ECSD_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the ECS API.
    Serve(Box<ServeArgs>),
    /// Run simulated container instances (virtual ECS agents) against an ECS endpoint.
    Agent(AgentArgs),
    /// Read the event log.
    #[command(subcommand)]
    Events(EventsCommand),
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Print events as they happen, one line each; resumes after disconnects.
    Tail(TailArgs),
}

/// Who ecsd's own clients sign as.
#[derive(clap::Args, Clone)]
struct SigningArgs {
    /// The access key to sign requests with.
    #[arg(long, env = "AWS_ACCESS_KEY_ID", default_value = "test")]
    access_key_id: String,
    /// Its secret.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", default_value = "test", hide_env_values = true)]
    secret_access_key: String,
    /// The region to sign requests for.
    #[arg(long = "signing-region", env = "AWS_DEFAULT_REGION", default_value = "us-east-1")]
    signing_region: String,
}

impl SigningArgs {
    fn credentials(&self) -> Credentials {
        Credentials {
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            region: self.signing_region.clone(),
        }
    }
}

#[derive(clap::Args)]
struct SimulationArgs {
    /// Cluster the instances join (created if missing, as real agents do).
    #[arg(long, default_value = "default")]
    cluster: String,
    /// CPU units each instance registers (1024 per vCPU).
    #[arg(long, default_value_t = 2048)]
    cpu: i32,
    /// Memory (MiB) each instance registers.
    #[arg(long, default_value_t = 4096)]
    memory: i32,
    /// Milliseconds between an instance's checks of its containers' run times (tasks arrive
    /// over ACS as soon as they are placed).
    #[arg(long, default_value_t = 250)]
    tick_millis: u64,
    /// The capacity provider the instances belong to: tasks of its strategy run on them.
    #[arg(long)]
    capacity_provider: Option<String>,
}

#[derive(clap::Args)]
struct AgentArgs {
    /// ECS endpoint to report to.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    endpoint: String,
    /// Number of instances.
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// File keeping the instances' identities, so that a restart re-registers them.
    #[arg(long)]
    state_file: Option<PathBuf>,
    #[command(flatten)]
    simulation: SimulationArgs,
    #[command(flatten)]
    signing: SigningArgs,
}

#[derive(clap::Args)]
struct TailArgs {
    /// The ecsd to read from.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    endpoint: String,
    /// Only events of this cluster.
    #[arg(long)]
    cluster: Option<String>,
    /// Only events of this kind, e.g. "ECS Task State Change" or "ECS Container Instance State Change".
    #[arg(long)]
    detail_type: Option<String>,
    /// Start with the oldest event kept (by default, with the next one to happen).
    #[arg(long, conflicts_with = "after")]
    from_start: bool,
    /// Start after this sequence number.
    #[arg(long)]
    after: Option<i64>,
    #[command(flatten)]
    signing: SigningArgs,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// A TOML file of settings, keyed by option name (`listen = "127.0.0.1:8091"`,
    /// `simulate-agents = 2`); options and environment variables given as well win.
    #[arg(long, env = "ECSD_CONFIG")]
    config: Option<PathBuf>,
    /// Log no line per API call (they are logged at INFO, target `ecsd::requests`).
    #[arg(long, env = "ECSD_NO_REQUEST_LOG")]
    no_request_log: bool,
    #[command(flatten, next_help_heading = "Listening and limits")]
    listen: ListenArgs,
    #[command(flatten, next_help_heading = "Store")]
    store: StoreArgs,
    #[command(flatten, next_help_heading = "Who may call, from where")]
    access: AccessArgs,
    #[command(flatten, next_help_heading = "Agent channels (ACS, TCS)")]
    channels: ChannelArgs,
    #[command(flatten, next_help_heading = "Events and retention")]
    events: EventArgs,
    #[command(flatten, next_help_heading = "Fargate and capacity providers")]
    fargate: FargateArgs,
    #[command(flatten, next_help_heading = "Simulated agents (only with --simulate-agents)")]
    simulate: SimulateArgs,
}

/// The capacity ecsd provides itself for FARGATE and FARGATE_SPOT tasks.
#[derive(clap::Args)]
struct FargateArgs {
    /// The address range of a subnet, as SUBNET=CIDR (`subnet-0a1b2c3d=10.0.1.0/24`); Fargate
    /// tasks in it take addresses from it. Repeatable. A subnet not named gets a /24 of
    /// 10.0.0.0/8 derived from its id.
    #[arg(long = "fargate-subnet", value_name = "SUBNET=CIDR", value_parser = subnet_range)]
    fargate_subnets: Vec<(String, Range)>,
    /// Run the containers of Fargate tasks on real container instances: those registered in the
    /// cluster `ecsd-fargate` of the task's account (ECS_CLUSTER=ecsd-fargate), apart from the
    /// user's clusters. Without it, ecsd simulates them.
    #[arg(long)]
    fargate_on_agents: bool,
    /// Seconds a capacity provider with managed scaling keeps more instances than it needs
    /// before it retires some (ECS: 15 minutes).
    #[arg(long, default_value_t = 900.0)]
    scale_in_after_secs: f64,
    /// Seconds a task waits in PROVISIONING for a capacity provider's capacity before it is
    /// stopped.
    #[arg(long, default_value_t = 1800.0)]
    provisioning_timeout_secs: f64,
}

fn subnet_range(s: &str) -> Result<(String, Range), String> {
    let (subnet, range) = s
        .split_once('=')
        .ok_or_else(|| format!("{s}: expected SUBNET=CIDR, as subnet-0a1b2c3d=10.0.1.0/24"))?;
    Ok((subnet.to_owned(), range.parse()?))
}

/// Where the server listens, and the limits that keep one client from holding it.
#[derive(clap::Args)]
struct ListenArgs {
    /// Address to listen on; port 0 picks a free port (the address is printed once ready).
    #[arg(long, env = "ECSD_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = Limits::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Connections served at once; past this, a new connection takes the place of the one idle
    /// longest (503 when every connection is busy).
    #[arg(long, default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// Connections one client address may hold at once, counted the same way.
    #[arg(long, default_value_t = Limits::default().max_connections_per_client)]
    max_connections_per_client: usize,
    /// Seconds a client has to send request headers, and the longest a connection may sit idle.
    #[arg(long, default_value_t = Limits::default().header_timeout.as_secs())]
    header_timeout_secs: u64,
    /// Seconds a client has to send a request body.
    #[arg(long, default_value_t = Limits::default().body_timeout.as_secs())]
    body_timeout_secs: u64,
}

impl ListenArgs {
    fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.max_body_bytes,
            max_connections: self.max_connections.max(1),
            max_connections_per_client: self.max_connections_per_client.max(1),
            header_timeout: Duration::from_secs(self.header_timeout_secs.max(1)),
            body_timeout: Duration::from_secs(self.body_timeout_secs.max(1)),
            ..Limits::default()
        }
    }
}

/// Where state is kept.
#[derive(clap::Args)]
struct StoreArgs {
    /// Directory of the embedded store.
    #[arg(long, env = "ECSD_DATA_DIR", default_value = "ecsd-data")]
    data_dir: PathBuf,
    /// Share a PostgreSQL database with other ecsd processes (postgres://USER@HOST:PORT/DB)
    /// instead of the embedded store.
    #[arg(long = "store", env = "ECSD_STORE")]
    url: Option<String>,
}

/// Credentials, regions and throttling.
#[derive(clap::Args)]
struct AccessArgs {
    /// Serve only these regions (repeat or separate with commas); requests signed for others
    /// are refused. Default: every region, each isolated from the others.
    #[arg(long = "region", env = "ECSD_REGION", value_delimiter = ',', value_parser = region)]
    regions: Vec<String>,
    /// Account of the development credentials (`test`/`test`), used when no credentials file is given.
    #[arg(long, env = "ECSD_ACCOUNT_ID", default_value = "123456789012", value_parser = account_id)]
    account_id: String,
    /// Credentials file (TOML) naming the principals allowed in and what they may do.
    /// Required to listen on anything but a loopback address.
    #[arg(long, env = "ECSD_CREDENTIALS")]
    credentials: Option<PathBuf>,
    /// Turn throttling off (local testing, benchmarks).
    #[arg(long, env = "ECSD_NO_THROTTLE")]
    no_throttle: bool,
    /// Token bucket of an operation family, FAMILY=RATE/BURST (read, write, agent), e.g. write=40/100.
    #[arg(long = "throttle", value_parser = family_rate)]
    throttle: Vec<(Family, Rate)>,
    /// Seconds a web console session lasts after sign-in.
    #[arg(long, default_value_t = ecsd::console::DEFAULT_LIFETIME.as_secs_f64())]
    console_session_secs: f64,
}

impl AccessArgs {
    fn keys(&self, listen: SocketAddr) -> Result<Keys, Box<dyn std::error::Error>> {
        match &self.credentials {
            Some(path) => {
                Keys::load(path).map_err(|e| format!("cannot use the credentials file {}: {e}", path.display()).into())
            }
            None if listen.ip().is_loopback() => Ok(Keys::development(&self.account_id)),
            None => Err(format!(
                "refusing to listen on {listen} with the development credentials: give --credentials FILE"
            )
            .into()),
        }
    }

    fn regions(&self) -> Regions {
        if self.regions.is_empty() {
            Regions::All
        } else {
            Regions::Only(self.regions.clone())
        }
    }

    fn throttle(&self) -> Throttle {
        if self.no_throttle {
            Throttle::off()
        } else {
            Throttle::new(&self.throttle)
        }
    }
}

/// How agents find the server and how often it speaks to them.
#[derive(clap::Args)]
struct ChannelArgs {
    /// Base URL agents are told to reach this server at (DiscoverPollEndpoint); default: http:// and the listen address.
    #[arg(long, env = "ECSD_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// Seconds between heartbeats on agent channels (ACS, TCS); an agent silent for six times
    /// this is taken for gone.
    #[arg(long, default_value_t = Timings::default().heartbeat.as_secs_f64())]
    agent_heartbeat_secs: f64,
    /// Seconds between task manifests sent to each connected agent.
    #[arg(long, default_value_t = Timings::default().manifest.as_secs_f64())]
    task_manifest_secs: f64,
}

impl ChannelArgs {
    fn timings(&self) -> Timings {
        Timings::with_heartbeat(
            Duration::from_secs_f64(self.agent_heartbeat_secs.max(0.1)),
            Duration::from_secs_f64(self.task_manifest_secs.max(0.1)),
        )
    }
}

/// Webhooks and how long history is kept.
#[derive(clap::Args)]
struct EventArgs {
    /// Webhook subscriptions (TOML): every event is POSTed to each, in order, at least once.
    #[arg(long, env = "ECSD_WEBHOOKS")]
    webhooks: Option<PathBuf>,
    /// Hours events are kept.
    #[arg(long, default_value_t = 24.0)]
    event_retention_hours: f64,
    /// Minutes stopped tasks stay visible to DescribeTasks (ECS keeps them at least an hour).
    #[arg(long, default_value_t = 60.0)]
    stopped_task_retention_minutes: f64,
    /// Seconds between sweeps of expired events and stopped tasks.
    #[arg(long, default_value_t = 60.0)]
    sweep_interval_secs: f64,
}

impl EventArgs {
    fn retention(&self) -> Retention {
        Retention {
            events: Duration::from_secs_f64(self.event_retention_hours.max(0.0) * 3600.0),
            stopped_tasks: Duration::from_secs_f64(self.stopped_task_retention_minutes.max(0.0) * 60.0),
            sweep_every: Duration::from_secs_f64(self.sweep_interval_secs.max(0.1)),
        }
    }
}

/// Simulated container instances run beside the server.
#[derive(clap::Args)]
struct SimulateArgs {
    /// Run this many simulated container instances beside the server (see `ecsd agent`).
    #[arg(long, default_value_t = 0)]
    simulate_agents: usize,
    #[command(flatten)]
    simulation: SimulationArgs,
    /// Region the simulated agents register in (default: the first `--region`, else
    /// AWS_DEFAULT_REGION, else us-east-1).
    #[arg(long, value_parser = region)]
    simulate_region: Option<String>,
    /// Key the simulated agents sign with (default: the development pair).
    #[arg(long, default_value = "test")]
    simulate_access_key_id: String,
    /// Secret of that key.
    #[arg(long, default_value = "test")]
    simulate_secret_access_key: String,
}

fn account_id(s: &str) -> Result<String, String> {
    if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(s.to_owned())
    } else {
        Err("an account id is 12 digits".into())
    }
}

fn region(s: &str) -> Result<String, String> {
    if ecsd::auth::is_region_name(s) {
        Ok(s.to_owned())
    } else {
        Err(format!("'{s}' is not a region name (such as us-east-1)"))
    }
}

fn family_rate(s: &str) -> Result<(Family, Rate), String> {
    let (family, rate) = s.split_once('=').ok_or("expected FAMILY=RATE/BURST")?;
    let family = Family::ALL
        .into_iter()
        .find(|f| f.name() == family)
        .ok_or_else(|| format!("unknown family '{family}' (read, write, agent)"))?;
    Ok((family, rate.parse()?))
}

/// The log filter: `ECSD_LOG` as a tracing filter (`ecsd=debug,hyper=info`); a bare level
/// (`debug`) applies to ecsd's own targets only, the libraries staying at `warn`.
fn log_filter(request_log: bool) -> EnvFilter {
    let own = ["ecsd", "ecsd_agent"];
    let mut filter = match std::env::var("ECSD_LOG") {
        Ok(spec) if spec.contains('=') || spec.contains(',') => EnvFilter::new(spec),
        Ok(level) if !level.trim().is_empty() => {
            EnvFilter::new(own.iter().map(|t| format!("{t}={level}")).collect::<Vec<_>>().join(",") + ",warn")
        }
        _ => EnvFilter::new("warn,ecsd=info,ecsd_agent=info"),
    };
    if !request_log {
        filter = filter.add_directive(
            format!("{}=off", ecsd::wire::REQUEST_LOG)
                .parse()
                .expect("a valid directive"),
        );
    }
    filter
}

fn init_logging(format: LogFormat, request_log: bool) {
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(log_filter(request_log))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    let cli = match config::parse() {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let request_log = !matches!(&cli.command, Command::Serve(args) if args.no_request_log);
    init_logging(cli.log_format, request_log);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ecsd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::Agent(args) => agent(args).await,
            Command::Events(EventsCommand::Tail(args)) => tail(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ecsd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The address `--listen` names, resolved like any server's (`localhost:8091`, `[::1]:80`).
async fn resolve(listen: &str) -> Result<SocketAddr, String> {
    let mut found = tokio::net::lookup_host(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}; give --listen HOST:PORT, e.g. 127.0.0.1:8080"))?;
    found
        .next()
        .ok_or_else(|| format!("cannot listen on {listen}: the name resolves to no address"))
}

/// Binds the listener, saying what to do when the address is taken.
async fn bind(listen: &str, address: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(address).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "cannot listen on {listen}: the address is already in use (another ecsd?); \
             choose another with --listen HOST:PORT (port 0 picks a free one)"
        ),
        std::io::ErrorKind::PermissionDenied => {
            format!("cannot listen on {listen}: permission denied; choose a port above 1023 with --listen")
        }
        _ => format!("cannot listen on {listen}: {e}"),
    })
}

async fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let listen = resolve(&args.listen.listen).await?;
    // Bound first: a taken address is found before the store is opened or migrated.
    let listener = bind(&args.listen.listen, listen).await?;
    let options = Options {
        data_dir: args.store.data_dir.clone(),
        store_url: args.store.url.clone(),
        regions: args.access.regions(),
        keys: args.access.keys(listen)?,
        throttle: args.access.throttle(),
        limits: args.listen.limits(),
        advertise_url: args.channels.advertise_url.clone(),
        retention: args.events.retention(),
        webhooks: match &args.events.webhooks {
            Some(path) => {
                webhooks::load(path).map_err(|e| format!("cannot use the webhooks file {}: {e}", path.display()))?
            }
            None => Vec::new(),
        },
        channels: args.channels.timings(),
        fargate: FargateCapacity {
            ranges: args.fargate.fargate_subnets.iter().cloned().collect(),
            pool: args.fargate.fargate_on_agents.then(|| POOL_CLUSTER.to_owned()),
        },
        scaling: ScalingTimings {
            scale_in_after: Duration::from_secs_f64(args.fargate.scale_in_after_secs.max(0.0)),
            provisioning_timeout: Duration::from_secs_f64(args.fargate.provisioning_timeout_secs.max(0.0)),
        },
        console_session: Duration::from_secs_f64(args.access.console_session_secs.max(1.0)),
    };
    let sim = &args.simulate;
    let region = sim
        .simulate_region
        .clone()
        .or_else(|| args.access.regions.first().cloned())
        .or_else(|| {
            std::env::var("AWS_DEFAULT_REGION")
                .ok()
                .filter(|r| ecsd::auth::is_region_name(r))
        })
        .unwrap_or_else(|| "us-east-1".into());
    let server = Server::open(options).await?;
    let address = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let simulation = (sim.simulate_agents > 0).then(|| {
        let options = SimOptions {
            endpoint: format!("http://{address}"),
            cluster: sim.simulation.cluster.clone(),
            instances: sim.simulate_agents,
            cpu: sim.simulation.cpu,
            memory: sim.simulation.memory,
            credentials: Credentials {
                access_key_id: sim.simulate_access_key_id.clone(),
                secret_access_key: sim.simulate_secret_access_key.clone(),
                region,
            },
            state_file: Some(args.store.data_dir.join("simulated-agents.json")),
            tick: Duration::from_millis(sim.simulation.tick_millis.max(10)),
            capacity_provider: sim.simulation.capacity_provider.clone(),
        };
        tokio::spawn(async move {
            if let Err(e) = sim::run(options, stopped).await {
                tracing::error!(error = %e, "the simulated agents could not start");
            }
        })
    });
    // Printed on stdout once requests can be served, for scripts and tests that use port 0.
    println!("ecsd listening on http://{address}");
    server
        .serve(listener, async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        })
        .await?;
    if let Some(simulation) = simulation {
        let _ = simulation.await;
    }
    tracing::info!("stopped");
    Ok(())
}

async fn agent(args: AgentArgs) -> Result<(), Box<dyn std::error::Error>> {
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let options = SimOptions {
        endpoint: args.endpoint,
        cluster: args.simulation.cluster,
        instances: args.instances,
        cpu: args.simulation.cpu,
        memory: args.simulation.memory,
        credentials: args.signing.credentials(),
        state_file: args.state_file,
        tick: Duration::from_millis(args.simulation.tick_millis.max(10)),
        capacity_provider: args.simulation.capacity_provider,
    };
    sim::run(options, stopped).await?;
    Ok(())
}

async fn tail(args: TailArgs) -> Result<(), Box<dyn std::error::Error>> {
    let client = EcsClient::new(&args.endpoint, args.signing.credentials());
    let tail = ecsd_agent::tail::Tail {
        cluster: args.cluster,
        detail_type: args.detail_type,
        after: if args.from_start { Some(0) } else { args.after },
    };
    ecsd_agent::tail::run(&client, &tail).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}
