//! The `gateway` command: `run`, `validate`, and `plugin new`.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use gateway::config;

/// jemalloc, measured against glibc's malloc and mimalloc for idle and
/// bursty connections (BENCHMARKS.md): what a burst or a parked connection
/// frees goes back to the system.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its first allocation: freed pages go back to
/// the system within about a second (by jemalloc's background thread, so
/// also when the gateway has gone quiet after a burst), not ten.
#[allow(unsafe_code)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &[u8; 60] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// A WebAssembly plugin-driven API gateway.
#[derive(Parser)]
#[command(name = "gateway", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway until SIGTERM or SIGINT (reloading on file changes and SIGHUP).
    Run {
        /// The YAML config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Check a config file (plugins, certificates and key files included), print its
    /// warnings and errors, and exit: 0 when it would run.
    Validate {
        /// The YAML config file.
        #[arg(value_name = "FILE", required_unless_present = "config")]
        file: Option<PathBuf>,
        /// The same, as an option (as `run` takes it).
        #[arg(short, long, value_name = "FILE", conflicts_with = "file")]
        config: Option<PathBuf>,
    },
    /// Work with plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Create a plugin crate that builds as generated: both hooks, a config type and a
    /// unit test.
    New {
        /// The plugin's name: lowercase letters, digits and `-`.
        name: String,
        /// The folder to create it in.
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
        /// The plugin SDK to build against (default: the copy this gateway was built
        /// from).
        #[arg(long, value_name = "PATH")]
        sdk: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run { config } => run(config),
        Command::Validate { file, config } => match file.or(config) {
            Some(file) => validate(file),
            None => ExitCode::from(2),
        },
        Command::Plugin {
            command: PluginCommand::New { name, dir, sdk },
        } => new_plugin(&name, &dir, sdk),
    }
}

/// `gateway plugin new`: the crate, and the commands that build and use it.
fn new_plugin(name: &str, dir: &std::path::Path, sdk: Option<PathBuf>) -> ExitCode {
    let sdk = sdk.unwrap_or_else(|| {
        let built_from = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk");
        std::fs::canonicalize(&built_from).unwrap_or(built_from)
    });
    if !sdk.join("Cargo.toml").is_file() {
        eprintln!(
            "no plugin SDK at {}: give its folder with --sdk PATH (plugin-sdk in the gateway's source)",
            sdk.display()
        );
        return ExitCode::FAILURE;
    }
    match gateway::scaffold::new_plugin(dir, name, &sdk) {
        Ok(created) => {
            println!("created {}", created.dir.display());
            println!("build it:");
            println!(
                "  cd {} && cargo build --release --target wasm32-wasip2",
                created.dir.display()
            );
            println!("then copy it into the gateway's plugin folder as {name}.wasm:");
            println!("  cp {} PLUGINS_DIR/{name}.wasm", created.wasm.display());
            println!("and name it in a route: plugins: [{{ name: {name} }}]");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// The log on stderr (`RUST_LOG`, default `info`) and, with `access_log:`,
/// the access log; returns the guard that flushes the access log.
fn logging(
    config: &config::Config,
) -> anyhow::Result<Option<tracing_appender::non_blocking::WorkerGuard>> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let not_access =
        tracing_subscriber::filter::filter_fn(|meta| meta.target() != gateway::access_log::TARGET);
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(filter)
        .with_filter(not_access);
    let (access, guard) = match &config.access_log {
        Some(settings) => {
            let (layer, guard) = gateway::access_log::layer(settings, &config.origin.base_dir())
                .with_context(|| format!("access_log.to: cannot open {}", settings.to))?;
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(stderr)
        .with(access)
        .init();
    Ok(guard)
}

/// A Tokio runtime, or the message to exit with.
fn tokio_runtime(
    mut builder: tokio::runtime::Builder,
) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|error| {
        eprintln!("cannot start the async runtime: {error}");
        ExitCode::FAILURE
    })
}

fn validate(file: PathBuf) -> ExitCode {
    let runtime = match tokio_runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    // Everything `run` would check, plugins included, short of serving.
    let checked = runtime.block_on(async {
        let config = config::load(&file)?;
        let (snapshot, _) = gateway::server::build(&config).await?;
        Ok::<_, gateway::StartError>((config, snapshot.warnings))
    });
    match checked {
        Ok((config, warnings)) => {
            for warning in warnings {
                eprintln!("warning: {warning}");
            }
            println!(
                "OK: {} is valid ({} routes, {} upstreams)",
                file.display(),
                config.routes.len(),
                config.upstreams.len()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

fn run(file: PathBuf) -> ExitCode {
    let config = match config::load(&file) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    // Flushes the access log at exit.
    let _access_log = match logging(&config) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("{error:#}");
            return ExitCode::FAILURE;
        }
    };
    // The main thread is the first worker; `gateway::serve` starts the
    // others, each with a single-threaded runtime of its own.
    let builder = tokio::runtime::Builder::new_current_thread();
    let runtime = match tokio_runtime(builder) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(serve(file, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(file: PathBuf, config: config::Config) -> anyhow::Result<()> {
    let gateway = gateway::Gateway::start(&config).await?;
    #[cfg(feature = "otlp")]
    if let Some(otlp) = &config.trace.otlp {
        gateway::otlp::start(otlp).map_err(|reason| anyhow::anyhow!("trace.otlp: {reason}"))?;
    }
    let listeners = gateway::bind(&gateway, &config)?;
    if let Some(admin) = &config.admin {
        let admin_listener = tokio::net::TcpListener::bind(admin.listen)
            .await
            .with_context(|| format!("cannot listen on {} (admin.listen)", admin.listen))?;
        println!("admin listening on http://{}", admin_listener.local_addr()?);
        tokio::spawn(gateway::admin::serve(
            admin_listener,
            gateway.clone(),
            std::future::pending(),
        ));
    }
    gateway::reload::spawn(gateway.clone(), file, &config);
    // One line on stdout per listener says where (the port may have been 0).
    let urls: Vec<String> = listeners.iter().map(gateway::Bound::url).collect();
    for url in &urls {
        println!("gateway listening on {url}");
    }
    std::io::stdout().flush()?;
    tracing::info!(listeners = ?urls, routes = config.routes.len(), "gateway started");
    gateway::serve(listeners, gateway, &config.server, shutdown_signal()).await;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the gateway with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
