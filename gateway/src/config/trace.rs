//! `trace:`: where the gateway exports its spans (OTLP, with the `otlp`
//! cargo feature). Trace context itself (`traceparent`) is always on.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::duration::HumanDuration;

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TraceConfig {
    #[serde(default)]
    pub otlp: Option<OtlpConfig>,
}

/// OTLP/HTTP export: spans are POSTed as JSON to `{endpoint}/v1/traces`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's OTLP/HTTP address, as `http://127.0.0.1:4318`.
    pub endpoint: String,
    /// `service.name` of the spans.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Sent with every export (a vendor's API key, say).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// One export's longest wait for the collector.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// The share of sampled requests exported, chosen at random (a client
    /// asks for sampling with its `traceparent`; this bounds what it costs).
    #[serde(default = "all")]
    pub sample: f64,
}

fn all() -> f64 {
    1.0
}

fn default_service_name() -> String {
    "gateway".into()
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

impl OtlpConfig {
    /// Where spans are POSTed.
    pub fn traces_url(&self) -> Result<http::Uri, String> {
        let base = self.endpoint.trim_end_matches('/');
        let uri: http::Uri = format!("{base}/v1/traces")
            .parse()
            .map_err(|e| format!("`{}` is not a URL: {e}", self.endpoint))?;
        match (uri.scheme_str(), uri.host()) {
            (Some("http" | "https"), Some(_)) => Ok(uri),
            _ => Err(format!(
                "`{}` is not an http:// or https:// URL with a host",
                self.endpoint
            )),
        }
    }
}

impl TraceConfig {
    /// Problems, by field below `trace`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let Some(otlp) = &self.otlp else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        if !cfg!(feature = "otlp") {
            problems.push((
                "otlp".into(),
                "this gateway was built without OTLP export; build it with `cargo build --release --features otlp`".into(),
            ));
        }
        if let Err(message) = otlp.traces_url() {
            problems.push(("otlp.endpoint".into(), message));
        }
        for (name, value) in &otlp.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || http::HeaderValue::from_str(value).is_err()
            {
                problems.push((
                    format!("otlp.headers.{name}"),
                    "not a valid HTTP header".into(),
                ));
            }
        }
        if !(otlp.sample > 0.0 && otlp.sample <= 1.0) {
            problems.push((
                "otlp.sample".into(),
                "must be more than 0 and at most 1 (1.0 exports every sampled request)".into(),
            ));
        }
        if otlp.timeout.0.is_zero() {
            problems.push(("otlp.timeout".into(), "must be more than 0".into()));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn otlp(endpoint: &str) -> OtlpConfig {
        OtlpConfig {
            endpoint: endpoint.into(),
            service_name: default_service_name(),
            headers: BTreeMap::new(),
            timeout: default_timeout(),
            sample: 1.0,
        }
    }

    #[test]
    fn spans_go_to_the_endpoints_traces_path() {
        let url = otlp("http://127.0.0.1:4318/").traces_url().expect("url");
        assert_eq!(url.to_string(), "http://127.0.0.1:4318/v1/traces");
        assert!(otlp("127.0.0.1:4318").traces_url().is_err());
        assert!(otlp("ftp://collector").traces_url().is_err());
    }

    #[test]
    fn without_the_feature_otlp_is_refused_by_name() {
        let config = TraceConfig {
            otlp: Some(otlp("http://127.0.0.1:4318")),
        };
        let fields: Vec<String> = config.problems().into_iter().map(|(f, _)| f).collect();
        if cfg!(feature = "otlp") {
            assert!(fields.is_empty(), "{fields:?}");
        } else {
            assert_eq!(fields, ["otlp"]);
        }
    }
}
