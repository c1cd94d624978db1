//! `access_log:`: where each request's line goes, in which format, and for
//! what share of requests.

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// `stdout`, or a file (relative to the config file) lines are appended to.
    pub to: String,
    #[serde(default)]
    pub format: LogFormat,
    /// The share of requests logged, chosen at random per request.
    #[serde(default = "all")]
    pub sample: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// A readable line, for terminals.
    Text,
}

fn all() -> f64 {
    1.0
}

impl AccessLogConfig {
    /// Why the file cannot be written, as far as can be told without
    /// creating it (`validate` must not): its folder is missing.
    pub fn folder_problem(&self, base: &std::path::Path) -> Option<String> {
        if self.to == "stdout" {
            return None;
        }
        let file = base.join(&self.to);
        let folder = file.parent()?;
        (!folder.as_os_str().is_empty() && !folder.is_dir())
            .then(|| format!("the folder {} does not exist", folder.display()))
    }

    /// Problems, by field below `access_log`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.to.trim().is_empty() {
            problems.push(("to".into(), "write stdout or a file path".into()));
        }
        if !(self.sample > 0.0 && self.sample <= 1.0) {
            problems.push((
                "sample".into(),
                "must be more than 0 and at most 1 (1.0 logs every request)".into(),
            ));
        }
        problems
    }
}
