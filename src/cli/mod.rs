//! The command line: `gateway serve` (the default), `gateway check` and `gateway user ...`.
//!
//! `check` runs exactly the loading code `serve` runs and prints the resolved listeners and route
//! table (never a secret); both exit non-zero with the reason when the config is bad.
//!
//! - [`user`]: the admin commands on accounts (`add`, `list`, `show`, `set-roles`, `disable`,
//!   `enable`, `delete`, `set-password`, `revoke-sessions`). They open the same store file as
//!   the server, from the same config, and work while it runs.
//! - `prompt`: reading passwords (no echo on a terminal) and confirmations.

mod prompt;
pub mod user;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, AuthPolicy, Config, LogFormat};
use crate::proxy::route::RouteTable;

/// An authenticating reverse proxy for unmodified web apps.
#[derive(Debug, Parser)]
#[command(name = "gateway", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (also for `serve` when no subcommand is given).
    #[arg(
        long,
        short,
        global = true,
        env = "GATEWAY_CONFIG",
        default_value = "gateway.yaml"
    )]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Validate the config and print the listeners and routes it resolves to.
    Check,
    /// Manage user accounts in the store (safe while the server runs; changes reach it within
    /// seconds).
    User {
        #[command(subcommand)]
        command: user::UserCommand,
    },
}

/// Parses the command line, runs the command and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&cli.config),
        Command::Check => check(&cli.config),
        Command::User { command } => user::run(&cli.config, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    config::load(path).map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))
}

fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    let config = load(path)?;
    init_logging(config.log.format, &config.log.level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listeners = crate::Listeners::bind(&config).await?;
        crate::run(listeners, config, shutdown_signal()).await?;
        Ok(())
    })
}

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let config = load(path)?;
    println!("config {} is valid", path.display());
    println!("listeners:");
    match config.listen.http {
        Some(a) => println!("  http   {a}"),
        None => println!("  http   off"),
    }
    match config.listen.https {
        Some(a) => println!(
            "  https  {a} (cert {}{})",
            config.tls.cert.display(),
            if config.tls.self_signed {
                ", self-signed if missing"
            } else {
                ""
            }
        ),
        None => println!("  https  off"),
    }
    println!(
        "auth api: {} (signup {:?}, tokens {:?})",
        config.auth.prefix, config.auth.signup, config.auth.algorithm
    );
    println!("routes (first match wins):");
    let table = RouteTable::new(&config.routes);
    for (i, r) in table.iter().enumerate() {
        let policy = match &r.policy {
            AuthPolicy::Public => "public".to_owned(),
            AuthPolicy::Required { roles } if roles.is_empty() => "required".to_owned(),
            AuthPolicy::Required { roles } => format!("required roles=[{}]", roles.join(",")),
        };
        println!(
            "  [{i}] {:<20} {} -> {}{} auth={policy} ({})",
            RouteTable::prefix_of(r),
            RouteTable::describe(r),
            r.upstream,
            if r.strip_prefix {
                " (strip prefix)"
            } else {
                ""
            },
            r.name,
        );
    }
    Ok(())
}

/// Logs to stderr, human-readable or JSON. `RUST_LOG` overrides the configured level. Colours
/// only on a terminal: a log file or journal would get raw escape codes between every field.
pub fn init_logging(format: LogFormat, level: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
