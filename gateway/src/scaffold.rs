//! `gateway plugin new NAME`: a plugin crate that builds as generated, with
//! both hooks, a config type and a unit test, so a plugin author starts
//! from working code (as `spin new` does).

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error(
        "`{0}` is not a plugin name: use lowercase letters, digits and `-` (it is the crate's name and the .wasm file's)"
    )]
    BadName(String),
    #[error("{} already exists; choose another name or folder", .0.display())]
    Exists(PathBuf),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The folder created and what to do next.
#[derive(Debug)]
pub struct Created {
    pub dir: PathBuf,
    /// The `.wasm` file `cargo build --release --target wasm32-wasip2` makes.
    pub wasm: PathBuf,
}

/// Creates `parent/NAME` with a plugin crate depending on the SDK at `sdk`.
pub fn new_plugin(parent: &Path, name: &str, sdk: &Path) -> Result<Created, ScaffoldError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    // Crate names cargo or the generated code would trip over.
    let reserved = [
        "test",
        "core",
        "std",
        "alloc",
        "serde",
        "plugin-sdk",
        "self",
        "crate",
        "super",
    ];
    if !valid || reserved.contains(&name) {
        return Err(ScaffoldError::BadName(name.to_string()));
    }
    let dir = parent.join(name);
    // Made here or not at all: never into a folder (or a link) that exists.
    std::fs::create_dir(&dir).map_err(|source| match source.kind() {
        std::io::ErrorKind::AlreadyExists => ScaffoldError::Exists(dir.clone()),
        _ => ScaffoldError::Write {
            path: dir.clone(),
            source,
        },
    })?;
    let write = |file: &str, text: String| {
        let path = dir.join(file);
        if let Some(folder) = path.parent()
            && folder != dir
        {
            std::fs::create_dir(folder).map_err(|source| ScaffoldError::Write {
                path: folder.to_path_buf(),
                source,
            })?;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut file| std::io::Write::write_all(&mut file, text.as_bytes()))
            .map_err(|source| ScaffoldError::Write { path, source })
    };
    // Cargo reads a relative path from the new crate, not from here; and
    // the path goes into a TOML string.
    let sdk = std::fs::canonicalize(sdk).unwrap_or_else(|_| sdk.to_path_buf());
    let sdk = sdk
        .display()
        .to_string()
        .replace('\\', "/")
        .replace('"', "\\\"");
    write("Cargo.toml", cargo_toml(name, &sdk))?;
    write("src/lib.rs", lib_rs(name))?;
    write(".gitignore", "/target\n".into())?;
    let wasm = dir.join(format!(
        "target/wasm32-wasip2/release/{}.wasm",
        name.replace('-', "_")
    ));
    Ok(Created { dir, wasm })
}

fn cargo_toml(name: &str, sdk: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]   # cdylib: the .wasm; rlib: unit tests on the host

[dependencies]
# The gateway's plugin SDK (the copy this gateway was built from).
plugin-sdk = {{ path = "{sdk}" }}
serde = {{ version = "1", features = ["derive"] }}

# A crate of its own, wherever it is created.
[workspace]

[profile.release]
opt-level = "s"
lto = true
"#
    )
}

/// `add-header` → `AddHeader`.
fn type_name(name: &str) -> String {
    name.split('-')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn lib_rs(name: &str) -> String {
    let header = format!("x-{name}");
    // `…Plugin`, so no name shadows the SDK's `Plugin`, `Request`, `Config`…
    let ty = format!("{}Plugin", type_name(name));
    format!(
        r#"//! The `{name}` plugin. Build it with
//!
//! ```sh
//! cargo build --release --target wasm32-wasip2
//! ```
//!
//! copy the `.wasm` from target/wasm32-wasip2/release into the gateway's
//! plugin folder as `{name}.wasm`, and name it in a route:
//!
//! ```yaml
//! plugins:
//!   - name: {name}
//!     config: {{ header: {header}, value: hello }}
//! ```

use plugin_sdk::prelude::*;

/// The route's `config:` for this plugin. Unknown keys are errors, so a
/// typo in the gateway's config is reported at load, not ignored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {{
    /// The header set on the request (sent upstream) and on the response.
    pub header: String,
    pub value: String,
}}

impl Default for Config {{
    fn default() -> Self {{
        Self {{
            header: "{header}".into(),
            value: "hello".into(),
        }}
    }}
}}

pub struct {ty} {{
    config: Config,
}}

impl Plugin for {ty} {{
    type Config = Config;

    /// Runs once per route when the gateway loads the plugin; an error
    /// here refuses the config, naming the route.
    fn new(config: Config) -> Result<Self, String> {{
        if config.header.is_empty() {{
            return Err("header must not be empty".into());
        }}
        Ok(Self {{ config }})
    }}

    /// Before the request goes upstream: edit it, or answer it here.
    fn on_request(&self, request: &mut Request) -> Action {{
        request
            .headers_mut()
            .insert(&self.config.header, &self.config.value);
        Action::Continue
    }}

    /// Before the answer goes back to the client.
    fn on_response(&self, response: &mut Response) {{
        response
            .headers_mut()
            .insert(&self.config.header, &self.config.value);
    }}
}}

export_plugin!({ty});

#[cfg(test)]
mod tests {{
    use super::*;

    #[test]
    fn both_hooks_set_the_header() {{
        let plugin = {ty}::new(Config::default()).expect("the default config is valid");
        let mut request = Request::new("GET", "/");
        assert!(matches!(plugin.on_request(&mut request), Action::Continue));
        assert_eq!(request.headers().get("{header}").as_deref(), Some("hello"));
        let mut response = Response::new(200);
        plugin.on_response(&mut response);
        assert_eq!(response.headers().get("{header}").as_deref(), Some("hello"));
    }}

    #[test]
    fn an_empty_header_is_refused() {{
        let config = Config {{
            header: String::new(),
            ..Config::default()
        }};
        assert!({ty}::new(config).is_err());
    }}
}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_folders_never_overwritten() {
        let dir = tempfile::tempdir().expect("dir");
        let sdk = Path::new("/sdk");
        for bad in ["", "Upper", "1st", "a_b", "a/b", "../x", "end-"] {
            assert!(
                matches!(
                    new_plugin(dir.path(), bad, sdk),
                    Err(ScaffoldError::BadName(_))
                ),
                "{bad:?}"
            );
        }
        let created = new_plugin(dir.path(), "add-header", sdk).expect("created");
        assert!(created.wasm.ends_with("release/add_header.wasm"));
        let lib = std::fs::read_to_string(created.dir.join("src/lib.rs")).expect("lib");
        assert!(
            lib.contains("impl Plugin for AddHeaderPlugin")
                && lib.contains("export_plugin!(AddHeaderPlugin)")
        );
        for reserved in ["test", "core", "serde", "plugin-sdk"] {
            assert!(matches!(
                new_plugin(dir.path(), reserved, sdk),
                Err(ScaffoldError::BadName(_))
            ));
        }
        let toml = std::fs::read_to_string(created.dir.join("Cargo.toml")).expect("toml");
        assert!(toml.contains("name = \"add-header\"") && toml.contains("path = \"/sdk\""));
        assert!(matches!(
            new_plugin(dir.path(), "add-header", sdk),
            Err(ScaffoldError::Exists(_))
        ));
    }
}
