//! `gateway run --config FILE` and `gateway validate FILE`.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use gateway::config;

const USAGE: &str = "usage:
  gateway run --config FILE    run the gateway
  gateway validate FILE        check a config file and exit";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["run", "--config", file] | ["run", "-c", file] => run(PathBuf::from(file)),
        ["validate", file] => validate(PathBuf::from(file)),
        ["--help"] | ["-h"] | ["help"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = match config::load(&file) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    // One worker: a current-thread runtime skips the work-stealing scheduler
    // and its cross-thread wake-ups (bench/ measures the difference).
    let builder = match config.server.workers {
        1 => tokio::runtime::Builder::new_current_thread(),
        0 => tokio::runtime::Builder::new_multi_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    };
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
    let listeners = gateway::bind(&gateway, &config).await?;
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
