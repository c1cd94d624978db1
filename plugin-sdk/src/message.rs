//! The request and response a hook edits, with edit tracking.

use serde::Serialize;

use crate::Headers;
use crate::bindings::gateway::plugin::types as wit;

/// Read-only facts about the request being handled.
#[derive(Debug, Clone, Default)]
struct Context {
    route: String,
    request_id: String,
    client_address: String,
    params: Vec<(String, String)>,
}

/// The request a request hook sees. Setters mark it edited; an edited
/// request is sent back to the gateway when the hook returns.
#[derive(Debug, Clone, Default)]
pub struct Request {
    method: String,
    path: String,
    query: String,
    headers: Headers,
    body: Option<Vec<u8>>,
    context: Context,
    modified: bool,
}

impl Request {
    /// A request for unit tests of plugin logic on the host.
    pub fn new(method: &str, path: &str) -> Self {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        Self {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            ..Self::default()
        }
    }

    /// Sets a route `{param}` capture (for unit tests).
    pub fn with_param(mut self, name: &str, value: &str) -> Self {
        self.context
            .params
            .push((name.to_string(), value.to_string()));
        self
    }

    /// The method, e.g. `GET`.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// Changes the method sent upstream.
    pub fn set_method(&mut self, method: &str) {
        self.method = method.to_string();
        self.modified = true;
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Changes the path sent upstream; the route's own `strip_prefix` and
    /// `rewrite` then no longer apply.
    pub fn set_path(&mut self, path: &str) {
        self.path = path.to_string();
        self.modified = true;
    }

    /// The query without its `?` (empty when none).
    pub fn query(&self) -> &str {
        &self.query
    }

    /// Replaces the whole query (without `?`).
    pub fn set_query(&mut self, query: &str) {
        self.query = query.to_string();
        self.modified = true;
    }

    /// The first value of query parameter `name`, as sent (not decoded).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        query_pairs(&self.query)
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// Adds `name=value` to the query, replacing earlier values of `name`.
    pub fn set_query_param(&mut self, name: &str, value: &str) {
        self.remove_query_param(name);
        if !self.query.is_empty() {
            self.query.push('&');
        }
        self.query.push_str(name);
        self.query.push('=');
        self.query.push_str(value);
        self.modified = true;
    }

    /// Removes every `name=…` from the query.
    pub fn remove_query_param(&mut self, name: &str) {
        let kept: Vec<&str> = self
            .query
            .split('&')
            .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some(name))
            .collect();
        let query = kept.join("&");
        if query != self.query {
            self.query = query;
            self.modified = true;
        }
    }

    /// The request headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The request headers, to edit.
    pub fn headers_mut(&mut self) -> &mut Headers {
        self.modified = true;
        &mut self.headers
    }

    /// The body, if this plugin asked for request bodies.
    pub fn body(&self) -> Option<&[u8]> {
        self.body.as_deref()
    }

    /// Replaces the body sent upstream.
    pub fn set_body(&mut self, body: Vec<u8>) {
        self.body = Some(body);
        self.modified = true;
    }

    /// The name of the route that matched.
    pub fn route(&self) -> &str {
        &self.context.route
    }

    /// The request's `x-request-id`.
    pub fn request_id(&self) -> &str {
        &self.context.request_id
    }

    /// The client's IP address.
    pub fn client_address(&self) -> &str {
        &self.context.client_address
    }

    /// A `{param}` captured by the route's path pattern.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.context
            .params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every `{param}` capture, in pattern order.
    pub fn params(&self) -> &[(String, String)] {
        &self.context.params
    }

    /// Whether a setter has been called (only then is the request sent back).
    pub fn is_modified(&self) -> bool {
        self.modified
    }

    pub(crate) fn from_wit(request: wit::Request, context: wit::Context) -> Self {
        Self {
            method: request.method,
            path: request.path,
            query: request.query,
            headers: from_wit_headers(request.headers),
            body: request.body,
            context: Context::from(context),
            modified: false,
        }
    }

    pub(crate) fn into_wit(self) -> wit::Request {
        wit::Request {
            method: self.method,
            path: self.path,
            query: self.query,
            headers: to_wit_headers(self.headers),
            body: self.body,
        }
    }
}

/// A response: the upstream's in a response hook, or one a plugin answers with.
#[derive(Debug, Clone, Default)]
pub struct Response {
    status: u16,
    headers: Headers,
    body: Option<Vec<u8>>,
    context: Context,
    modified: bool,
}

impl Response {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            body: Some(Vec::new()),
            ..Self::default()
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
        self.body = Some(body);
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Changes the status code.
    pub fn set_status(&mut self, status: u16) {
        self.status = status;
        self.modified = true;
    }

    /// The response headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The response headers, to edit.
    pub fn headers_mut(&mut self) -> &mut Headers {
        self.modified = true;
        &mut self.headers
    }

    /// The body, if this plugin asked for response bodies.
    pub fn body(&self) -> Option<&[u8]> {
        self.body.as_deref()
    }

    /// Replaces the body sent to the client.
    pub fn set_body(&mut self, body: Vec<u8>) {
        self.body = Some(body);
        self.modified = true;
    }

    /// The name of the route that matched.
    pub fn route(&self) -> &str {
        &self.context.route
    }

    /// The request's `x-request-id`.
    pub fn request_id(&self) -> &str {
        &self.context.request_id
    }

    /// Whether a setter has been called (only then is the response sent back).
    pub fn is_modified(&self) -> bool {
        self.modified
    }

    pub(crate) fn from_wit(response: wit::Response, context: wit::Context) -> Self {
        Self {
            status: response.status,
            headers: from_wit_headers(response.headers),
            body: response.body,
            context: Context::from(context),
            modified: false,
        }
    }

    pub(crate) fn into_wit(self) -> wit::Response {
        wit::Response {
            status: self.status,
            headers: to_wit_headers(self.headers),
            body: self.body,
        }
    }
}

impl From<wit::Context> for Context {
    fn from(context: wit::Context) -> Self {
        Self {
            route: context.route,
            request_id: context.request_id,
            client_address: context.client_address,
            params: context.params,
        }
    }
}

fn from_wit_headers(headers: Vec<wit::Header>) -> Headers {
    Headers::from_lines(headers.into_iter().map(|h| (h.name, h.value)).collect())
}

fn to_wit_headers(headers: Headers) -> Vec<wit::Header> {
    headers
        .into_lines()
        .into_iter()
        .map(|(name, value)| wit::Header { name, value })
        .collect()
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
    fn query_helpers_edit_and_mark() {
        let mut r = Request::new("GET", "/a?x=1&y=2&x=3");
        assert_eq!(r.query_param("x"), Some("1"));
        assert!(!r.is_modified());
        r.remove_query_param("nothing");
        assert!(!r.is_modified(), "removing an absent parameter is no edit");
        r.remove_query_param("x");
        assert_eq!(r.query(), "y=2");
        r.set_query_param("z", "9");
        assert_eq!(r.query(), "y=2&z=9");
        assert!(r.is_modified());
    }

    #[test]
    fn error_responses_use_the_gateway_shape() {
        let r = Response::error(401, "unauthorized", "no token");
        let json: serde_json::Value =
            serde_json::from_slice(r.body().unwrap_or_default()).unwrap_or_default();
        assert_eq!(json["error"]["code"], "unauthorized");
        assert_eq!(r.headers().get("content-type"), Some("application/json"));
    }
}
