//! One request's context: what the gateway knows about it, and the values
//! its plugins leave for each other.

use std::cell::RefCell;
use std::rc::Rc;

use crate::bindings::gateway::plugin::context as host;

/// The context of the request a hook handles, shared by every plugin of the
/// route's chain and by both hooks: [`Request::context`](crate::Request::context)
/// and [`Response::context`](crate::Response::context) are the same values.
///
/// Keep anything about one request here, never in globals or in the plugin
/// value: the gateway reuses instances across requests, and a request's
/// response hook may run on another instance than its request hook.
/// Values are never sent upstream unless a plugin copies one into a header.
///
/// ```
/// use plugin_sdk::{Request, Response};
///
/// let req = Request::new("GET", "/orders");
/// req.context().set("consumer", "alice");
/// // Later, in the response hook of another plugin of the chain:
/// let resp = Response::new(200).with_request(&req);
/// assert_eq!(resp.context().get("consumer").as_deref(), Some("alice"));
/// ```
#[derive(Debug, Clone)]
pub struct Context {
    /// `None` in a hook: the context is the gateway's.
    local: Option<Rc<Local>>,
}

/// How a request reached the gateway over TLS ([`Context::tls`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSession {
    /// The name the client asked for (SNI), lowercase; `None` when it sent
    /// none (clients connecting by IP address do not).
    pub server_name: Option<String>,
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: String,
    /// The protocol agreed by ALPN (`h2`, `http/1.1`).
    pub alpn: Option<String>,
}

#[derive(Debug, Default)]
struct Local {
    route: String,
    request_id: String,
    client_address: String,
    tls: RefCell<Option<TlsSession>>,
    upstream: String,
    params: RefCell<Vec<(String, String)>>,
    values: RefCell<Vec<(String, String)>>,
}

impl Context {
    /// A context for values built outside the gateway (unit tests).
    pub(crate) fn local() -> Self {
        Self {
            local: Some(Rc::new(Local {
                route: "test".into(),
                request_id: "test-request".into(),
                client_address: "127.0.0.1".into(),
                upstream: "test".into(),
                ..Local::default()
            })),
        }
    }

    pub(crate) fn gateway() -> Self {
        Self { local: None }
    }

    pub(crate) fn add_param(&self, name: &str, value: &str) {
        if let Some(local) = &self.local {
            local
                .params
                .borrow_mut()
                .push((name.to_string(), value.to_string()));
        }
    }

    pub(crate) fn set_tls(&self, session: TlsSession) {
        if let Some(local) = &self.local {
            *local.tls.borrow_mut() = Some(session);
        }
    }

    /// The value a plugin of this request set for `key`.
    pub fn get(&self, key: &str) -> Option<String> {
        match &self.local {
            Some(local) => local
                .values
                .borrow()
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone()),
            None => host::get(key),
        }
    }

    /// Sets `key` for the rest of this request: later request hooks and
    /// every response hook see it. At most 64 keys and 64 KiB in all; more
    /// fails the request with `500 plugin_failed`.
    pub fn set(&self, key: &str, value: &str) {
        match &self.local {
            Some(local) => {
                let mut values = local.values.borrow_mut();
                match values.iter_mut().find(|(k, _)| k == key) {
                    Some((_, old)) => *old = value.to_string(),
                    None => values.push((key.to_string(), value.to_string())),
                }
            }
            None => host::set(key, value),
        }
    }

    /// Removes `key`; says whether it was set.
    pub fn remove(&self, key: &str) -> bool {
        match &self.local {
            Some(local) => {
                let mut values = local.values.borrow_mut();
                let before = values.len();
                values.retain(|(k, _)| k != key);
                values.len() != before
            }
            None => host::remove(key),
        }
    }

    /// The name of the route that matched (`test` off the gateway).
    pub fn route(&self) -> String {
        self.local
            .as_ref()
            .map_or_else(host::route, |l| l.route.clone())
    }

    /// The request's `x-request-id`.
    pub fn request_id(&self) -> String {
        self.local
            .as_ref()
            .map_or_else(host::request_id, |l| l.request_id.clone())
    }

    /// The client's IP address.
    pub fn client_address(&self) -> String {
        self.local
            .as_ref()
            .map_or_else(host::client_address, |l| l.client_address.clone())
    }

    /// The TLS session the request came over; `None` over plain HTTP.
    /// Off the gateway, what [`Request::with_tls`](crate::Request::with_tls) set.
    pub fn tls(&self) -> Option<TlsSession> {
        match &self.local {
            Some(local) => local.tls.borrow().clone(),
            None => host::tls().map(|s| TlsSession {
                server_name: s.server_name,
                version: s.version,
                alpn: s.alpn,
            }),
        }
    }

    /// The name of the upstream pool the route sends to.
    pub fn upstream(&self) -> String {
        self.local
            .as_ref()
            .map_or_else(host::upstream, |l| l.upstream.clone())
    }

    /// Every `{param}` captured by the route's path pattern, in order.
    pub fn params(&self) -> Vec<(String, String)> {
        self.local
            .as_ref()
            .map_or_else(host::params, |l| l.params.borrow().clone())
    }

    /// A `{param}` captured by the route's path pattern.
    pub fn param(&self, name: &str) -> Option<String> {
        self.params()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_set_replaced_and_removed() {
        let ctx = Context::local();
        assert_eq!(ctx.get("a"), None);
        ctx.set("a", "1");
        ctx.set("a", "2");
        assert_eq!(ctx.get("a").as_deref(), Some("2"));
        assert!(ctx.remove("a"));
        assert!(!ctx.remove("a"));
    }

    #[test]
    fn a_test_request_over_tls_says_so_and_others_do_not() {
        let session = TlsSession {
            server_name: Some("api.example.com".into()),
            version: "TLSv1.3".into(),
            alpn: Some("h2".into()),
        };
        let over_tls = crate::Request::new("GET", "/").with_tls(session.clone());
        assert_eq!(over_tls.tls(), Some(session));
        assert_eq!(
            over_tls.tls().and_then(|tls| tls.server_name).as_deref(),
            Some("api.example.com")
        );
        assert_eq!(crate::Request::new("GET", "/").tls(), None);
    }

    #[test]
    fn clones_share_the_values_of_one_request_only() {
        let one = Context::local();
        let same = one.clone();
        let other = Context::local();
        one.set("consumer", "alice");
        assert_eq!(same.get("consumer").as_deref(), Some("alice"));
        assert_eq!(other.get("consumer"), None);
    }
}
