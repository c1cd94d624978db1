//! The request and response a hook edits: in a hook they live in the
//! gateway and every read or edit is a call into it; built by a plugin (an
//! answer, a unit test's input) they live here.

use serde::Serialize;

use crate::Headers;
use crate::bindings::gateway::plugin::{context, message, request, response, types as wit};

/// Read-only facts about the request, for values built outside the gateway.
#[derive(Debug, Clone, Default)]
struct Context {
    route: String,
    request_id: String,
    client_address: String,
    params: Vec<(String, String)>,
}

/// Where a message's parts and context are read: here, or in the gateway.
trait Source {
    fn context(&self) -> Option<&Context>;
    fn local_body(&self) -> Option<&Option<Vec<u8>>>;
    fn local_body_mut(&mut self) -> Option<&mut Option<Vec<u8>>>;
}

fn route(source: &impl Source) -> String {
    source
        .context()
        .map_or_else(context::route, |c| c.route.clone())
}

fn request_id(source: &impl Source) -> String {
    source
        .context()
        .map_or_else(context::request_id, |c| c.request_id.clone())
}

fn body(source: &impl Source) -> Option<Vec<u8>> {
    match source.local_body() {
        Some(body) => body.clone(),
        None => message::get_body(),
    }
}

fn set_body(source: &mut impl Source, new: Vec<u8>) {
    match source.local_body_mut() {
        Some(body) => *body = Some(new),
        None => message::set_body(&new),
    }
}

/// The request a request hook sees. Edits go to the gateway as they are made.
#[derive(Debug, Clone)]
pub struct Request {
    /// `None` in a hook: the request is the gateway's.
    local: Option<Box<LocalRequest>>,
    headers: Headers,
}

#[derive(Debug, Clone, Default)]
struct LocalRequest {
    method: String,
    path: String,
    query: String,
    body: Option<Vec<u8>>,
    context: Context,
}

impl Source for Request {
    fn context(&self) -> Option<&Context> {
        self.local.as_ref().map(|l| &l.context)
    }
    fn local_body(&self) -> Option<&Option<Vec<u8>>> {
        self.local.as_ref().map(|l| &l.body)
    }
    fn local_body_mut(&mut self) -> Option<&mut Option<Vec<u8>>> {
        self.local.as_mut().map(|l| &mut l.body)
    }
}

impl Request {
    /// A request for unit tests of plugin logic on the host.
    pub fn new(method: &str, path: &str) -> Self {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        Self {
            local: Some(Box::new(LocalRequest {
                method: method.to_string(),
                path: path.to_string(),
                query: query.to_string(),
                ..LocalRequest::default()
            })),
            headers: Headers::new(),
        }
    }

    /// The request of the hook in progress.
    pub(crate) fn gateway() -> Self {
        Self {
            local: None,
            headers: Headers::gateway(),
        }
    }

    /// Sets a route `{param}` capture (for unit tests).
    pub fn with_param(mut self, name: &str, value: &str) -> Self {
        if let Some(local) = &mut self.local {
            local
                .context
                .params
                .push((name.to_string(), value.to_string()));
        }
        self
    }

    /// Adds a header line (for unit tests).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.append(name, value);
        self
    }

    /// The method, e.g. `GET`.
    pub fn method(&self) -> String {
        match &self.local {
            Some(local) => local.method.clone(),
            None => request::method(),
        }
    }

    /// Changes the method sent upstream.
    pub fn set_method(&mut self, method: &str) {
        match &mut self.local {
            Some(local) => local.method = method.to_string(),
            None => request::set_method(method),
        }
    }

    /// The path without the query.
    pub fn path(&self) -> String {
        match &self.local {
            Some(local) => local.path.clone(),
            None => request::path(),
        }
    }

    /// Changes the path sent upstream; the route's own `strip_prefix` and
    /// `rewrite` then no longer apply.
    pub fn set_path(&mut self, path: &str) {
        match &mut self.local {
            Some(local) => local.path = path.to_string(),
            None => request::set_path(path),
        }
    }

    /// The query without its `?` (empty when none).
    pub fn query(&self) -> String {
        match &self.local {
            Some(local) => local.query.clone(),
            None => request::query(),
        }
    }

    /// Replaces the whole query (without `?`).
    pub fn set_query(&mut self, query: &str) {
        match &mut self.local {
            Some(local) => local.query = query.to_string(),
            None => request::set_query(query),
        }
    }

    /// The first value of query parameter `name`, as sent (not decoded).
    pub fn query_param(&self, name: &str) -> Option<String> {
        query_pairs(&self.query())
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }

    /// Adds `name=value` to the query, replacing earlier values of `name`.
    pub fn set_query_param(&mut self, name: &str, value: &str) {
        let mut query = without_param(&self.query(), name);
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(name);
        query.push('=');
        query.push_str(value);
        self.set_query(&query);
    }

    /// Removes every `name=…` from the query.
    pub fn remove_query_param(&mut self, name: &str) {
        let before = self.query();
        let after = without_param(&before, name);
        if after != before {
            self.set_query(&after);
        }
    }

    /// The request headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The request headers, to edit.
    pub fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }

    /// The body, if this plugin asked for request bodies.
    pub fn body(&self) -> Option<Vec<u8>> {
        body(self)
    }

    /// Replaces the body sent upstream.
    pub fn set_body(&mut self, new: Vec<u8>) {
        set_body(self, new);
    }

    /// The name of the route that matched.
    pub fn route(&self) -> String {
        route(self)
    }

    /// The request's `x-request-id`.
    pub fn request_id(&self) -> String {
        request_id(self)
    }

    /// The client's IP address.
    pub fn client_address(&self) -> String {
        self.context()
            .map_or_else(context::client_address, |c| c.client_address.clone())
    }

    /// A `{param}` captured by the route's path pattern.
    pub fn param(&self, name: &str) -> Option<String> {
        self.params()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// Every `{param}` capture, in pattern order.
    pub fn params(&self) -> Vec<(String, String)> {
        self.context()
            .map_or_else(context::params, |c| c.params.clone())
    }
}

/// A response: the upstream's in a response hook, or one a plugin answers with.
#[derive(Debug, Clone)]
pub struct Response {
    /// `None` in a hook: the response is the gateway's.
    local: Option<Box<LocalResponse>>,
    headers: Headers,
}

#[derive(Debug, Clone, Default)]
struct LocalResponse {
    status: u16,
    body: Option<Vec<u8>>,
    context: Context,
}

impl Source for Response {
    fn context(&self) -> Option<&Context> {
        self.local.as_ref().map(|l| &l.context)
    }
    fn local_body(&self) -> Option<&Option<Vec<u8>>> {
        self.local.as_ref().map(|l| &l.body)
    }
    fn local_body_mut(&mut self) -> Option<&mut Option<Vec<u8>>> {
        self.local.as_mut().map(|l| &mut l.body)
    }
}

impl Response {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Self {
        Self {
            local: Some(Box::new(LocalResponse {
                status,
                body: Some(Vec::new()),
                ..LocalResponse::default()
            })),
            headers: Headers::new(),
        }
    }

    /// The response of the hook in progress.
    pub(crate) fn gateway() -> Self {
        Self {
            local: None,
            headers: Headers::gateway(),
        }
    }

    /// A `text/plain` response.
    pub fn text(status: u16, text: &str) -> Self {
        Self::new(status)
            .with_header("content-type", "text/plain; charset=utf-8")
            .with_body(text.as_bytes().to_vec())
    }

    /// An `application/json` response from any serialisable value.
    ///
    /// ```
    /// use plugin_sdk::{Action, Response};
    ///
    /// let deny = Action::Respond(Response::json(403, &serde_json::json!({ "denied": true })));
    /// # let _ = deny;
    /// ```
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Self {
        let body = serde_json::to_vec(value)
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
        Self::new(status)
            .with_header("content-type", "application/json")
            .with_body(body)
    }

    /// The gateway's own error shape: `{"error":{"status":…,"code":…,"message":…}}`.
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        Self::json(
            status,
            &serde_json::json!({ "error": { "status": status, "code": code, "message": message } }),
        )
    }

    /// Adds a header line.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: Vec<u8>) -> Self {
        self.set_body(body);
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        match &self.local {
            Some(local) => local.status,
            None => response::status(),
        }
    }

    /// Changes the status code.
    pub fn set_status(&mut self, status: u16) {
        match &mut self.local {
            Some(local) => local.status = status,
            None => response::set_status(status),
        }
    }

    /// The response headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The response headers, to edit.
    pub fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }

    /// The body: always for a response built here; in a response hook, if
    /// this plugin asked for response bodies.
    pub fn body(&self) -> Option<Vec<u8>> {
        body(self)
    }

    /// Replaces the body sent to the client.
    pub fn set_body(&mut self, new: Vec<u8>) {
        set_body(self, new);
    }

    /// The name of the route that matched.
    pub fn route(&self) -> String {
        route(self)
    }

    /// The request's `x-request-id`.
    pub fn request_id(&self) -> String {
        request_id(self)
    }

    /// This response as a plugin's answer to the gateway.
    pub(crate) fn into_wit(self) -> wit::Response {
        wit::Response {
            status: self.status(),
            headers: self
                .headers
                .lines()
                .into_iter()
                .map(|(name, value)| wit::Header { name, value })
                .collect(),
            body: self.body().unwrap_or_default(),
        }
    }
}

/// `query` without any `name=…` pair.
fn without_param(query: &str, name: &str) -> String {
    query
        .split('&')
        .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some(name))
        .collect::<Vec<_>>()
        .join("&")
}

fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_helpers_edit() {
        let mut r = Request::new("GET", "/a?x=1&y=2&x=3");
        assert_eq!(r.query_param("x").as_deref(), Some("1"));
        r.remove_query_param("nothing");
        assert_eq!(r.query(), "x=1&y=2&x=3");
        r.remove_query_param("x");
        assert_eq!(r.query(), "y=2");
        r.set_query_param("z", "9");
        assert_eq!(r.query(), "y=2&z=9");
        r.set_query_param("y", "3");
        assert_eq!(r.query(), "z=9&y=3");
    }

    #[test]
    fn error_responses_use_the_gateway_shape() {
        let r = Response::error(401, "unauthorized", "no token");
        let json: serde_json::Value =
            serde_json::from_slice(&r.body().unwrap_or_default()).unwrap_or_default();
        assert_eq!(json["error"]["code"], "unauthorized");
        assert_eq!(
            r.headers().get("content-type").as_deref(),
            Some("application/json")
        );
    }
}
