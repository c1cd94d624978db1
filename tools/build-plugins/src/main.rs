//! `cargo run -p build-plugins -- DIR NAME...`: builds the named plugin
//! crates for wasm32-wasip2 and copies `NAME.wasm` into DIR (for scripts
//! such as `bench/run`).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((dir, names)) = args.split_first() else {
        eprintln!("usage: build-plugins DIR NAME...");
        return ExitCode::from(2);
    };
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let result = build_plugins::build(&names)
        .and_then(|built| build_plugins::install(&built, &PathBuf::from(dir), &names));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}
