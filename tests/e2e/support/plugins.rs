//! Real `.wasm` plugins built from this repository, in a plugin folder of
//! the test's own.

use std::path::{Path, PathBuf};

/// A temporary plugin folder holding `NAME.wasm` for each of `names`.
pub struct PluginDir {
    dir: tempfile::TempDir,
}

impl PluginDir {
    pub fn with(names: &[&str]) -> PluginDir {
        let built = build_plugins::build_all().unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().expect("temp dir");
        build_plugins::install(&built, dir.path(), names).unwrap_or_else(|e| panic!("{e}"));
        PluginDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.wasm"))
    }

    /// Runs `gateway validate` on `yaml` and returns its output, with the
    /// config file's path shortened to `FILE` and this folder's to `DIR`.
    pub fn validate(&self, yaml: &str) -> (bool, String) {
        let (_dir, path) = super::gateway::write_config(yaml);
        let (ok, text) = super::gateway::validate(&path);
        let text = text
            .replace(&path.display().to_string(), "FILE")
            .replace(&self.path().display().to_string(), "DIR");
        (ok, text)
    }

    /// The `plugins:` config section for this folder, with a private cache.
    pub fn section(&self, extra: &str) -> String {
        format!(
            "plugins:\n  dir: \"{}\"\n  cache_dir: \"{}\"\n{extra}",
            self.path().display(),
            self.path().join(".cache").display()
        )
    }
}
