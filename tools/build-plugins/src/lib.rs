//! Builds the plugin crates of this repository into `.wasm` components, so
//! that `cargo run -p demo` and `cargo test` need no separate build step.
//!
//! The build runs `cargo build --release --target wasm32-wasip2` in its own
//! target directory (`target/wasm`), which keeps it from waiting on the lock
//! of the cargo command that started it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Every plugin crate in the workspace: shipped plugins and test fixtures.
pub const ALL: &[&str] = &[
    "transform",
    "cors",
    "auth",
    "rate-limit",
    "aggregate",
    "probe",
    "next-major",
    "stamp-v1",
    "stamp-v2",
    "noop",
    "sockets",
    "secret-reader",
    "state-abuser",
];

const TARGET: &str = "wasm32-wasip2";

/// The workspace root (this crate lives at `tools/build-plugins`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds every plugin once per process and returns the folder holding
/// `NAME.wasm` for each.
pub fn build_all() -> Result<PathBuf, String> {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT
        .lock()
        .map_err(|_| "a previous plugin build panicked".to_string())?;
    if let Some(dir) = built.as_ref() {
        return Ok(dir.clone());
    }
    let dir = build(ALL)?;
    *built = Some(dir.clone());
    Ok(dir)
}

/// Builds `packages` for wasm32-wasip2 in release mode; returns the output folder.
pub fn build(packages: &[&str]) -> Result<PathBuf, String> {
    let root = workspace_root();
    ensure_target()?;
    let target_dir = root.join("target/wasm");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut command = Command::new(cargo);
    command
        .current_dir(&root)
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(&target_dir);
    for package in packages {
        command.args(["-p", package]);
    }
    // Flags meant for the host build (coverage, sanitizers) do not fit wasm.
    command
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    let output = command
        .output()
        .map_err(|e| format!("cannot run cargo to build the plugins: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "building the plugins failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let out = target_dir.join(TARGET).join("release");
    for package in packages {
        let file = out.join(format!("{}.wasm", package.replace('-', "_")));
        if !file.exists() {
            return Err(format!("the build did not produce {}", file.display()));
        }
    }
    Ok(out)
}

/// Copies `NAME.wasm` of each named plugin from `built` into `dir`.
pub fn install(built: &Path, dir: &Path, names: &[&str]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for name in names {
        let file = format!("{}.wasm", name.replace('-', "_"));
        let to = dir.join(format!("{name}.wasm"));
        std::fs::copy(built.join(&file), &to)
            .map_err(|e| format!("cannot copy {file} to {}: {e}", to.display()))?;
    }
    Ok(())
}

/// Adds the wasm32-wasip2 standard library with rustup when it is missing.
fn ensure_target() -> Result<(), String> {
    let installed = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .is_some_and(|dir| dir.exists());
    if installed {
        return Ok(());
    }
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .map_err(|e| format!("the {TARGET} target is missing and rustup could not be run: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`rustup target add {TARGET}` failed"))
    }
}
