//! The `ecsd` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use ecsd::auth::Keys;
use ecsd::server::{Limits, Options, Server};
use ecsd::throttle::{Family, Rate, Throttle};

#[derive(Parser)]
#[command(name = "ecsd", version, about = "An Amazon ECS-compatible control plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the ECS API.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the address is printed once ready).
    #[arg(long, env = "ECSD_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory of the embedded store.
    #[arg(long, env = "ECSD_DATA_DIR", default_value = "ecsd-data")]
    data_dir: PathBuf,
    /// Regions served (repeat or separate with commas); requests signed for others are refused.
    #[arg(
        long = "region",
        env = "ECSD_REGION",
        default_value = "us-east-1",
        value_delimiter = ','
    )]
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
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = Limits::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Connections served at once.
    #[arg(long, default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// Seconds a client has to send request headers, and the longest a connection may sit idle.
    #[arg(long, default_value_t = Limits::default().header_timeout.as_secs())]
    header_timeout_secs: u64,
    /// Base URL agents are told to reach this server at (DiscoverPollEndpoint); default: http:// and the listen address.
    #[arg(long, env = "ECSD_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// Seconds a client has to send a request body.
    #[arg(long, default_value_t = Limits::default().body_timeout.as_secs())]
    body_timeout_secs: u64,
}

fn account_id(s: &str) -> Result<String, String> {
    if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(s.to_owned())
    } else {
        Err("an account id is 12 digits".into())
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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("ECSD_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ecsd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
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

async fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let keys = match &args.credentials {
        Some(path) => Keys::load(path)?,
        None if args.listen.ip().is_loopback() => Keys::development(&args.account_id),
        None => {
            return Err(format!(
                "refusing to listen on {} with the development credentials: give --credentials FILE",
                args.listen
            )
            .into())
        }
    };
    let throttle = if args.no_throttle {
        Throttle::off()
    } else {
        Throttle::new(&args.throttle)
    };
    let limits = Limits {
        max_body_bytes: args.max_body_bytes,
        max_connections: args.max_connections.max(1),
        header_timeout: Duration::from_secs(args.header_timeout_secs.max(1)),
        body_timeout: Duration::from_secs(args.body_timeout_secs.max(1)),
        ..Limits::default()
    };
    let options = Options {
        data_dir: args.data_dir,
        regions: args.regions,
        keys,
        throttle,
        limits,
        advertise_url: args.advertise_url,
    };
    let server = Server::open(options).await?;
    let listener = TcpListener::bind(args.listen).await?;
    // Printed on stdout once requests can be served, for scripts and tests that use port 0.
    println!("ecsd listening on http://{}", listener.local_addr()?);
    server.serve(listener, shutdown_signal()).await?;
    tracing::info!("stopped");
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
