//! Errors the gateway answers itself, and their one JSON shape:
//! `{"error":{"status":502,"code":"upstream_unavailable","message":"…","request_id":"…"}}`.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

/// Why the gateway could not proxy a request; each maps to one status.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The client sent something we cannot route.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The client's request body failed on the way to the upstream.
    #[error("the request body failed: {reason}")]
    ClientBody { reason: String, idle: bool },
    #[error("no route matches {method} {host}{path}")]
    NoRoute {
        method: http::Method,
        host: String,
        path: String,
    },
    #[error("upstream \"{0}\" has no healthy target")]
    NoHealthyTarget(String),
    /// The pool's `circuit_breaker.max_in_flight` and `max_pending` were full.
    #[error("upstream \"{0}\" has as many requests in flight and waiting as it takes")]
    Overloaded(String),
    #[error("upstream \"{upstream}\" target {target} is unavailable: {reason}")]
    UpstreamUnavailable {
        upstream: String,
        target: String,
        reason: String,
    },
    #[error("upstream \"{upstream}\" target {target} did not answer within {}ms", timeout.as_millis())]
    UpstreamTimeout {
        upstream: String,
        target: String,
        timeout: Duration,
    },
    #[error("the request body is larger than the {limit} bytes plugins may buffer")]
    PayloadTooLarge { limit: u64 },
    /// A plugin on `route` asked for the response body and it could not be held.
    #[error(
        "the upstream response on route \"{route}\" could not be buffered for its plugins: {reason}"
    )]
    ResponseTooLarge { route: String, reason: String },
    #[error("plugin \"{plugin}\" on route \"{route}\" failed: {reason}")]
    PluginFailed {
        plugin: String,
        route: String,
        reason: String,
    },
    /// `limit` says which: its CPU `deadline`, or its `wall-clock ceiling`.
    #[error("plugin \"{plugin}\" on route \"{route}\" ran past its {}ms {limit}", deadline.as_millis())]
    PluginTimeout {
        plugin: String,
        route: String,
        deadline: Duration,
        limit: &'static str,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProxyError {
    /// The one place errors become HTTP statuses.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::ClientBody { idle: true, .. } => {
                (StatusCode::REQUEST_TIMEOUT, "client_body_timeout")
            }
            Self::ClientBody { idle: false, .. } => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::NoRoute { .. } => (StatusCode::NOT_FOUND, "route_not_found"),
            Self::NoHealthyTarget(_) => (StatusCode::SERVICE_UNAVAILABLE, "no_healthy_upstream"),
            Self::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "upstream_overloaded"),
            Self::UpstreamUnavailable { .. } => (StatusCode::BAD_GATEWAY, "upstream_unavailable"),
            Self::UpstreamTimeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
            Self::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::ResponseTooLarge { .. } => {
                (StatusCode::BAD_GATEWAY, "upstream_response_too_large")
            }
            Self::PluginFailed { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "plugin_failed"),
            Self::PluginTimeout { .. } => (StatusCode::SERVICE_UNAVAILABLE, "plugin_timeout"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }

    /// What the client is told: never a target's address, an OS error or a
    /// plugin's own words (panic text, trap details). Those go to the log,
    /// with the request id the client sees.
    pub fn public_message(&self) -> String {
        match self {
            Self::BadRequest(_)
            | Self::NoRoute { .. }
            | Self::PayloadTooLarge { .. }
            | Self::PluginTimeout { .. } => self.to_string(),
            Self::ClientBody { idle: true, .. } => "the request body stalled".into(),
            Self::ClientBody { idle: false, .. } => "the request body could not be read".into(),
            Self::NoHealthyTarget(_) => "the upstream has no healthy target".into(),
            Self::Overloaded(_) => "the upstream is at its limit of requests; try again".into(),
            Self::UpstreamUnavailable { .. } => "the upstream is unavailable".into(),
            Self::UpstreamTimeout { timeout, .. } => format!(
                "the upstream did not answer within {}ms",
                timeout.as_millis()
            ),
            Self::ResponseTooLarge { .. } => {
                "the upstream response is too large for this route's plugins".into()
            }
            Self::PluginFailed { plugin, route, .. } => {
                format!("plugin \"{plugin}\" on route \"{route}\" failed")
            }
            Self::Internal(_) => "internal error".into(),
        }
    }

    pub fn to_response(&self, request_id: &str) -> Response<Full<Bytes>> {
        let (status, code) = self.status_and_code();
        json_error(status, code, &self.public_message(), request_id)
    }
}

/// A response in the gateway's JSON error format.
pub fn json_error(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &str,
) -> Response<Full<Bytes>> {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        error: Fields<'a>,
    }
    #[derive(serde::Serialize)]
    struct Fields<'a> {
        status: u16,
        code: &'a str,
        message: &'a str,
        request_id: &'a str,
    }
    let body = Body {
        error: Fields {
            status: status.as_u16(),
            code,
            message,
            request_id,
        },
    };
    // Serialising four strings cannot fail; an empty body would still carry the status.
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn client_messages_hold_no_internals() {
        let unavailable = ProxyError::UpstreamUnavailable {
            upstream: "users".into(),
            target: "10.1.2.3:8080".into(),
            reason: "Connection refused (os error 111)".into(),
        };
        let failed = ProxyError::PluginFailed {
            plugin: "auth".into(),
            route: "api".into(),
            reason: "panicked at src/lib.rs:3: secret=hunter2".into(),
        };
        for error in [unavailable, failed] {
            let message = error.public_message();
            for internal in ["10.1.2.3", "os error", "hunter2", "panicked"] {
                assert!(!message.contains(internal), "{message}");
            }
            assert!(
                error.to_string().len() > message.len(),
                "the log keeps the details"
            );
        }
    }

    #[tokio::test]
    async fn errors_render_as_the_json_shape() {
        let err = ProxyError::NoHealthyTarget("users".into());
        let response = err.to_response("req-1");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert!(body.starts_with(br#"{"error":{"status":503,"code":"no_healthy_upstream""#));
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"error": {
                "status": 503,
                "code": "no_healthy_upstream",
                "message": "the upstream has no healthy target",
                "request_id": "req-1",
            }})
        );
    }
}
