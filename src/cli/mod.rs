//! The command line: `gateway serve` (the default), `gateway check` and `gateway user ...`.
//!
//! `check` runs exactly the loading code `serve` runs and prints the resolved listeners and route
//! table (never a secret) and which `GATEWAY_...` variables overrode the file; both exit
//! non-zero with the reason when the config is bad. `healthcheck` asks a running gateway's
//! liveness endpoint over plain HTTP, or HTTPS when that is off (for container `HEALTHCHECK`s:
//! distroless images have no curl).
//!
//! - [`user`]: the admin commands on accounts (`add`, `list`, `show`, `set-roles`, `disable`,
//!   `enable`, `delete`, `set-password`, `revoke-sessions`). They open the same store file as
//!   the server, from the same config, and work while it runs.
//! - [`migrate`]: copies accounts, sessions, revocations and keys from the configured store to
//!   another one (redb to PostgreSQL when one machine is outgrown, and back).
//! - `healthcheck`: that probe.
//! - `prompt`: reading passwords (no echo on a terminal) and confirmations.

/// Writes one line to standard output and returns the `io::Result`. Unlike `println!`, a reader
/// that goes away (`gateway check | head -1`) is an error the command returns, not a panic;
/// [`main`] then exits quietly, as other command-line tools do.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

mod healthcheck;
mod keys;
mod migrate;
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
    /// Exit 0 if the gateway on this host answers its liveness endpoint with 200, else 1. For
    /// container health checks. Asks `health.live` on the config's HTTP listener, else on the
    /// HTTPS one.
    Healthcheck {
        /// How long to wait for the answer, e.g. `2s`.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Manage user accounts in the store (safe while the server runs; changes reach it within
    /// seconds).
    User {
        #[command(subcommand)]
        command: user::UserCommand,
    },
    /// List or rotate the token signing keys (EdDSA); a running gateway picks up a rotation
    /// within seconds.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Copy users, live sessions, revocations and signing keys from the configured store to
    /// another, empty one: a `postgres://` URL or a redb file path.
    Migrate {
        /// Where to copy to: `postgres://user:password@host:5432/db` or a `.redb` file path.
        /// Prefer the GATEWAY_MIGRATE_TO variable for a URL with a password: the command line
        /// is visible to other users of the machine.
        #[arg(long, env = "GATEWAY_MIGRATE_TO", hide_env_values = true)]
        to: String,
    },
}

/// Parses the command line, runs the command and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&cli.config),
        Command::Check => check(&cli.config),
        Command::Healthcheck { timeout } => healthcheck::run(&cli.config, timeout),
        Command::User { command } => user::run(&cli.config, command),
        Command::Keys { command } => keys::run(&cli.config, command),
        Command::Migrate { to } => migrate::run(&cli.config, &to),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output is gone: nothing more to say, and nobody to say it to.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    config::load(path).map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))
}

/// Opens the store the config names, for an admin command.
fn open_store(config: &Config) -> anyhow::Result<crate::store::Store> {
    crate::store::Store::connect(&config.store)
        .and_then(|s| s.with_encryption(config.store_encryption_key.as_ref()))
        .map_err(|e| anyhow::anyhow!("open store ({}): {e}", config.store.describe()))
}

fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    let config = load(path)?;
    init_logging(config.log.format, &config.log.level);
    return_big_blocks_to_the_system();
    // Connections are served by the workers' own runtimes (see `server`); this one runs the
    // background work: the admin listener, change-feed polling, signals and reloads.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let path = path.to_owned();
    runtime.block_on(async move {
        spawn_memory_trim();
        let listeners = crate::Listeners::bind(&config).await?;
        let running = crate::server::start(listeners, config).await?;
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        let mut hangups = reload_signals();
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(()) = hangups.recv() => {
                    // The same loading code as start-up; a broken file is refused and the
                    // running configuration stays.
                    match crate::config::load(&path) {
                        Ok(config) => {
                            let _ = running.reload(config).await;
                        }
                        Err(e) => {
                            running.metrics().reload(false);
                            tracing::error!(error = %e, "reload refused; the previous configuration keeps serving");
                        }
                    }
                }
            }
        }
        // A second signal during shutdown_delay skips the rest of it.
        running.shutdown_or_sooner(shutdown_signal()).await;
        Ok(())
    })
}

/// Makes glibc serve every allocation of 1 MiB or more with its own mapping, returned to the
/// system when freed. By default glibc raises that threshold after the first large free, and
/// then keeps each hashing thread's argon2 block (19 MiB with the default parameters) in its
/// heap for good: idle memory grew by that much per hashing thread after the first login. The
/// cost is a fresh mapping per hash, a few percent of its time.
fn return_big_blocks_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets an allocator tunable; called before the runtimes start.
        let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024) } == 1;
        if !ok {
            tracing::debug!("could not set the allocator's mmap threshold");
        }
    }
}

/// How often freed heap memory is given back to the system.
const TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Every [`TRIM_INTERVAL`], gives the heap memory that is free back to the system. glibc keeps
/// freed memory in each thread's arena; after a burst of 10,000 connections the two serving
/// threads kept about 70 MB that nothing used (measured: 179 MB before a trim, 111 MB after).
/// A trim takes the arenas' locks for a moment, on a blocking thread.
fn spawn_memory_trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::spawn(async {
        let mut every = tokio::time::interval(TRIM_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            // SAFETY: malloc_trim only returns free pages to the system.
            let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
        }
    });
}

/// SIGHUP, as a stream of reload requests (never fires off Unix).
fn reload_signals() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            if tx.send(()).await.is_err() {
                return;
            }
        }
    });
    #[cfg(not(unix))]
    drop(tx);
    rx
}

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let config = load(path)?;
    say!("config {} is valid", path.display())?;
    if !config.env_overrides.is_empty() {
        // Names only: a value may be a secret.
        say!(
            "overrides from environment: {}",
            config.env_overrides.join(", ")
        )?;
    }
    say!("listeners:")?;
    match config.listen.http {
        Some(a) => say!("  http   {a}")?,
        None => say!("  http   off")?,
    }
    match config.listen.https {
        Some(a) => say!(
            "  https  {a} (cert {}{})",
            config.tls.cert.display(),
            if config.tls.self_signed {
                ", self-signed if missing"
            } else {
                ""
            }
        )?,
        None => say!("  https  off")?,
    }
    say!(
        "store: {}{}",
        config.store.describe(),
        if config.store_encryption_key.is_some() {
            " (secrets encrypted with store.encryption_key)"
        } else {
            ""
        }
    )?;
    // The same refusals as `serve`: a store file or TLS key other users can read.
    let mut private = Vec::new();
    if let config::StoreSettings::Redb { path } = &config.store {
        private.push((
            path.as_path(),
            "store file",
            crate::private_file::Rule::OwnerOnly,
        ));
    }
    if config.listen.https.is_some() {
        let key = config.tls.key.as_path();
        private.push((key, "TLS key", crate::private_file::Rule::KeyFile));
    }
    for (path, what, rule) in private {
        if path.exists() {
            crate::private_file::check(path, what, rule)?;
        }
    }
    say!(
        "auth api: {} (signup {:?}, tokens {:?})",
        config.auth.prefix,
        config.auth.signup,
        config.auth.algorithm
    )?;
    match &config.email {
        // No credentials: describe() names the server, the sender and the link base only.
        Some(email) => say!("email: {}", email.describe())?,
        None => say!("email: off (verification and password reset are off)")?,
    }
    let mfa = &config.auth.mfa;
    let roles = if mfa.required_for_roles.is_empty() {
        String::new()
    } else {
        format!(
            ", required for roles [{}]",
            mfa.required_for_roles.join(",")
        )
    };
    say!(
        "second factors: authenticator apps (issuer {:?}){roles}",
        mfa.issuer
    )?;
    match &config.auth.webauthn {
        Some(w) => say!(
            "passkeys: on (origin {}, rp_id {}, {})",
            w.origin,
            w.rp_id,
            if w.passwordless {
                "also without a password"
            } else {
                "as a second factor"
            }
        )?,
        None => say!("passkeys: off (set auth.webauthn.origin or email.public_url)")?,
    }
    say!("routes (first match wins):")?;
    let table = RouteTable::new(&config.routes);
    for (i, r) in table.iter().enumerate() {
        let policy = match &r.spec.policy {
            AuthPolicy::Public => "public".to_owned(),
            AuthPolicy::Required { roles } if roles.is_empty() => "required".to_owned(),
            AuthPolicy::Required { roles } => format!("required roles=[{}]", roles.join(",")),
        };
        let policy = if r.spec.require_mfa {
            format!("{policy} mfa=required")
        } else {
            policy
        };
        say!(
            "  [{i}] {:<20} {} -> {}{} auth={policy} ({})",
            RouteTable::prefix_of(r),
            RouteTable::describe(r),
            r.spec.upstream,
            if r.spec.strip_prefix {
                " (strip prefix)"
            } else {
                ""
            },
            r.spec.name,
        )?;
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
