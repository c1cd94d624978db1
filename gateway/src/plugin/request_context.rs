//! One request's context, carried by the chain from its first request hook
//! to its last response hook: the facts the gateway knows, the values plugins
//! leave for each other, and the request as sent upstream for response hooks.
//!
//! It belongs to the request, not to an instance: a request hook and the
//! response hook of the same request may run on different pooled instances.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method, Uri};

use crate::routing::Params;

/// Most keys one request's context holds.
pub const MAX_VALUES: usize = 64;
/// Most bytes of keys and values one request's context holds.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// The per-request context of the plugin chain.
#[derive(Debug)]
pub struct RequestContext {
    request_id: HeaderValue,
    client_ip: HeaderValue,
    tls: Option<Arc<crate::tls::Session>>,
    params: Params,
    upstream: Arc<str>,
    values: Vec<(String, String)>,
    value_bytes: usize,
    /// The request as response hooks see it (`request.*` in `on-response`).
    request: Option<RequestHead>,
}

/// A request's method, URI and headers, kept for response hooks.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
}

impl RequestHead {
    pub fn of(method: &Method, uri: &Uri, headers: &HeaderMap) -> Self {
        Self {
            method: method.clone(),
            uri: uri.clone(),
            headers: headers.clone(),
        }
    }

    pub fn of_request<B>(request: &http::Request<B>) -> Self {
        Self::of(request.method(), request.uri(), request.headers())
    }

    pub fn of_parts(parts: &http::request::Parts) -> Self {
        Self::of(&parts.method, &parts.uri, &parts.headers)
    }
}

/// A value that would take the context past its limits.
#[derive(Debug, thiserror::Error)]
#[error(
    "context value `{0}`: a request's context holds at most {MAX_VALUES} keys and {MAX_VALUE_BYTES} bytes"
)]
pub struct ContextFull(pub String);

impl Default for RequestContext {
    /// An empty context (what a chain leaves behind while it holds the real one).
    fn default() -> Self {
        Self::new(
            &HeaderValue::from_static(""),
            &HeaderValue::from_static(""),
            None,
            &Params::new(),
            &Arc::from(""),
        )
    }
}

impl RequestContext {
    pub fn new(
        request_id: &HeaderValue,
        client_ip: &HeaderValue,
        tls: Option<Arc<crate::tls::Session>>,
        params: &Params,
        upstream: &Arc<str>,
    ) -> Self {
        Self {
            request_id: request_id.clone(),
            client_ip: client_ip.clone(),
            tls,
            params: params.clone(),
            upstream: upstream.clone(),
            values: Vec::new(),
            value_bytes: 0,
            request: None,
        }
    }

    pub fn request_id(&self) -> String {
        lossy(&self.request_id)
    }

    pub fn client_address(&self) -> String {
        lossy(&self.client_ip)
    }

    /// The TLS session the request came over; `None` over plain HTTP.
    pub fn tls(&self) -> Option<&crate::tls::Session> {
        self.tls.as_deref()
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `key`, within the limits; a value past them is refused whole.
    pub fn set(&mut self, key: String, value: String) -> Result<(), ContextFull> {
        match self.values.iter().position(|(k, _)| *k == key) {
            Some(at) => {
                let bytes = self.value_bytes - self.values[at].1.len() + value.len();
                if bytes > MAX_VALUE_BYTES {
                    return Err(ContextFull(key));
                }
                self.values[at].1 = value;
                self.value_bytes = bytes;
            }
            None => {
                let bytes = self.value_bytes + key.len() + value.len();
                if bytes > MAX_VALUE_BYTES || self.values.len() >= MAX_VALUES {
                    return Err(ContextFull(key));
                }
                self.values.push((key, value));
                self.value_bytes = bytes;
            }
        }
        Ok(())
    }

    pub fn remove(&mut self, key: &str) -> bool {
        match self.values.iter().position(|(k, _)| k == key) {
            Some(at) => {
                let (k, v) = self.values.swap_remove(at);
                self.value_bytes -= k.len() + v.len();
                true
            }
            None => false,
        }
    }

    /// Keeps the request as response hooks will see it.
    pub fn set_request(&mut self, head: RequestHead) {
        self.request = Some(head);
    }

    pub fn request(&self) -> Option<&RequestHead> {
        self.request.as_ref()
    }
}

/// Header values that are not UTF-8 reach plugins with the bad bytes replaced.
pub fn lossy(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_set_replaced_and_removed() -> Result<(), ContextFull> {
        let mut ctx = RequestContext::default();
        ctx.set("consumer".into(), "alice".into())?;
        ctx.set("consumer".into(), "bob".into())?;
        assert_eq!(ctx.get("consumer"), Some("bob"));
        assert!(ctx.remove("consumer"));
        assert!(!ctx.remove("consumer"));
        assert_eq!(ctx.get("consumer"), None);
        assert_eq!(ctx.value_bytes, 0);
        Ok(())
    }

    #[test]
    fn the_context_is_bounded_in_keys_and_bytes() {
        let mut ctx = RequestContext::default();
        for i in 0..MAX_VALUES {
            assert!(ctx.set(format!("k{i}"), "v".into()).is_ok());
        }
        assert!(ctx.set("one-more".into(), "v".into()).is_err());
        assert!(
            ctx.set("k0".into(), "replaced".into()).is_ok(),
            "replacing needs no new key"
        );
        let mut ctx = RequestContext::default();
        assert!(ctx.set("big".into(), "x".repeat(MAX_VALUE_BYTES)).is_err());
        assert!(
            ctx.set("big".into(), "x".repeat(MAX_VALUE_BYTES - 3))
                .is_ok()
        );
        assert!(
            ctx.set("big".into(), "x".repeat(MAX_VALUE_BYTES - 2))
                .is_err()
        );
        assert_eq!(ctx.get("big").map(str::len), Some(MAX_VALUE_BYTES - 3));
    }
}
