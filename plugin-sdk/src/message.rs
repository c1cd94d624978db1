//! The request and response a hook edits: in a hook they live in the
//! gateway and every read or edit is a call into it; built by a plugin (an
//! answer, a unit test's input) they live here.

use serde::Serialize;

use crate::bindings::gateway::plugin::{message, request, response, types as wit};
use crate::{Context, Headers};

/// The request a request hook sees. Edits go to the gateway as they are made.
#[derive(Debug, Clone)]
pub struct Request {
    /// `None` in a hook: the request is the gateway's.
    local: Option<Box<LocalRequest>>,
    headers: Headers,
    context: Context,
}

#[derive(Debug, Clone, Default)]
struct LocalRequest {
    method: String,
    path: String,
    query: String,
    body: Option<Vec<u8>>,
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
                body: None,
            })),
            headers: Headers::new(),
            context: Context::local(),
        }
    }

    /// The request of the hook in progress.
    pub(crate) fn gateway() -> Self {
        Self {
            local: None,
            headers: Headers::gateway(),
            context: Context::gateway(),
        }
    }

    /// This request as if it came over TLS (for unit tests).
    pub fn with_tls(self, session: crate::TlsSession) -> Self {
        self.context.set_tls(session);
        self
    }

    /// Sets a route `{param}` capture (for unit tests).
    pub fn with_param(self, name: &str, value: &str) -> Self {
        self.context.add_param(name, value);
        self
    }

    /// Adds a header line (for unit tests).
    pub fn with_header(self, name: &str, value: &str) -> Self {
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

    /// The request headers, to read and edit.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The request headers; the same as [`headers`](Self::headers), whose
    /// edits already take `&self`. Kept so edits read as edits.
    pub fn headers_mut(&self) -> &Headers {
        &self.headers
    }

    /// The body, if this plugin asked for request bodies.
    pub fn body(&self) -> Option<Vec<u8>> {
        match &self.local {
            Some(local) => local.body.clone(),
            None => message::get_body(),
        }
    }

    /// Replaces the body sent upstream.
    pub fn set_body(&mut self, new: Vec<u8>) {
        match &mut self.local {
            Some(local) => local.body = Some(new),
            None => message::set_body(&new),
        }
    }

    /// This request's context: the facts the gateway knows and the values
    /// plugins leave for each other.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// The name of the route that matched.
    pub fn route(&self) -> String {
        self.context.route()
    }

    /// The request's `x-request-id`.
    pub fn request_id(&self) -> String {
        self.context.request_id()
    }

    /// The client's IP address.
    pub fn client_address(&self) -> String {
        self.context.client_address()
    }

    /// The TLS session the request came over; `None` over plain HTTP.
    pub fn tls(&self) -> Option<crate::TlsSession> {
        self.context.tls()
    }

    /// A `{param}` captured by the route's path pattern.
    pub fn param(&self, name: &str) -> Option<String> {
        self.context.param(name)
    }

    /// Every `{param}` capture, in pattern order.
    pub fn params(&self) -> Vec<(String, String)> {
        self.context.params()
    }
}

/// The request as a response hook sees it, read-only: as it was sent
/// upstream, or as it stood when a plugin or the gateway answered instead.
#[derive(Debug, Clone, Default)]
pub struct RequestHead {
    /// `None` in a hook: the request is the gateway's.
    local: Option<Box<LocalHead>>,
}

#[derive(Debug, Clone, Default)]
struct LocalHead {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
}

impl RequestHead {
    fn gateway() -> Self {
        Self { local: None }
    }

    /// The method, e.g. `GET`.
    pub fn method(&self) -> String {
        self.local
            .as_ref()
            .map_or_else(request::method, |l| l.method.clone())
    }

    /// The path without the query.
    pub fn path(&self) -> String {
        self.local
            .as_ref()
            .map_or_else(request::path, |l| l.path.clone())
    }

    /// The query without its `?` (empty when none).
    pub fn query(&self) -> String {
        self.local
            .as_ref()
            .map_or_else(request::query, |l| l.query.clone())
    }

    /// The first value of request header `name` (any case).
    pub fn header(&self, name: &str) -> Option<String> {
        match &self.local {
            Some(local) => local
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone()),
            None => request::get_header(name),
        }
    }

    /// Every value of request header `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        match &self.local {
            Some(local) => local
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
                .collect(),
            None => request::get_header_values(name),
        }
    }

    /// Every request header line as (name, value), in order.
    pub fn header_lines(&self) -> Vec<(String, String)> {
        match &self.local {
            Some(local) => local.headers.clone(),
            None => request::get_headers()
                .into_iter()
                .map(|h| (h.name, h.value))
                .collect(),
        }
    }
}

/// A response: the upstream's (or the gateway's own) in a response hook, or
/// one a plugin answers with.
#[derive(Debug, Clone)]
pub struct Response {
    /// `None` in a hook: the response is the gateway's.
    local: Option<Box<LocalResponse>>,
    headers: Headers,
    context: Context,
    request: RequestHead,
}

#[derive(Debug, Clone, Default)]
struct LocalResponse {
    status: u16,
    body: Option<Vec<u8>>,
}

impl Response {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Self {
        Self {
            local: Some(Box::new(LocalResponse {
                status,
                body: Some(Vec::new()),
            })),
            headers: Headers::new(),
            context: Context::local(),
            request: RequestHead::default(),
        }
    }

    /// The response of the hook in progress.
    pub(crate) fn gateway() -> Self {
        Self {
            local: None,
            headers: Headers::gateway(),
            context: Context::gateway(),
            request: RequestHead::gateway(),
        }
    }

    /// This response as the answer to `request` (for unit tests of response
    /// hooks): [`request`](Self::request) reads `request` as it is now, and
    /// the two share one [`Context`].
    pub fn with_request(mut self, request: &Request) -> Self {
        self.request = RequestHead {
            local: Some(Box::new(LocalHead {
                method: request.method(),
                path: request.path(),
                query: request.query(),
                headers: request.headers().lines(),
            })),
        };
        self.context = request.context().clone();
        self
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

    /// The gateway's own error shape as the answer to `request`, with its
    /// `request_id`, exactly like the errors the gateway answers itself:
    /// `{"error":{"status":…,"code":…,"message":…,"request_id":…}}`.
    pub fn error_for(request: &Request, status: u16, code: &str, message: &str) -> Self {
        #[derive(Serialize)]
        struct Body<'a> {
            error: Fields<'a>,
        }
        // In the order the gateway's own errors have.
        #[derive(Serialize)]
        struct Fields<'a> {
            status: u16,
            code: &'a str,
            message: &'a str,
            request_id: String,
        }
        let body = Body {
            error: Fields {
                status,
                code,
                message,
                request_id: request.request_id(),
            },
        };
        Self::json(status, &body)
    }

    /// Adds a header line.
    pub fn with_header(self, name: &str, value: &str) -> Self {
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

    /// The response headers, to read and edit.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The response headers; the same as [`headers`](Self::headers).
    pub fn headers_mut(&self) -> &Headers {
        &self.headers
    }

    /// The body: always for a response built here; in a response hook, if
    /// this plugin asked for response bodies.
    pub fn body(&self) -> Option<Vec<u8>> {
        match &self.local {
            Some(local) => local.body.clone(),
            None => message::get_body(),
        }
    }

    /// Replaces the body sent to the client.
    pub fn set_body(&mut self, new: Vec<u8>) {
        match &mut self.local {
            Some(local) => local.body = Some(new),
            None => message::set_body(&new),
        }
    }

    /// The request this response answers, read-only (see [`RequestHead`]).
    pub fn request(&self) -> &RequestHead {
        &self.request
    }

    /// The request's context, shared with its request hooks.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// The name of the route that matched.
    pub fn route(&self) -> String {
        self.context.route()
    }

    /// The request's `x-request-id`.
    pub fn request_id(&self) -> String {
        self.context.request_id()
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

    #[test]
    fn an_error_for_a_request_carries_its_id() {
        let req = Request::new("GET", "/");
        let r = Response::error_for(&req, 403, "denied", "no");
        let json: serde_json::Value =
            serde_json::from_slice(&r.body().unwrap_or_default()).unwrap_or_default();
        assert_eq!(json["error"]["request_id"], "test-request");
        assert_eq!(json["error"]["status"], 403);
        let text = String::from_utf8(r.body().unwrap_or_default()).unwrap_or_default();
        assert!(
            text.starts_with(r#"{"error":{"status":403,"code":"denied""#),
            "{text}"
        );
    }

    #[test]
    fn reading_the_request_while_editing_its_headers_needs_no_second_borrow() {
        let req = Request::new("GET", "/a").with_header("x-user", "alice");
        req.headers_mut().insert("x-id", &req.request_id());
        req.headers()
            .insert("x-copy", &req.headers().get("x-user").unwrap_or_default());
        assert_eq!(req.headers().get("x-id").as_deref(), Some("test-request"));
        assert_eq!(req.headers().get("x-copy").as_deref(), Some("alice"));
    }

    #[test]
    fn a_response_reads_its_request_and_shares_its_context() {
        let req = Request::new("POST", "/a?b=1").with_header("Origin", "https://x.test");
        req.context().set("consumer", "alice");
        let resp = Response::new(200).with_request(&req);
        assert_eq!(resp.request().method(), "POST");
        assert_eq!(resp.request().path(), "/a");
        assert_eq!(resp.request().query(), "b=1");
        assert_eq!(
            resp.request().header("origin").as_deref(),
            Some("https://x.test")
        );
        assert_eq!(resp.context().get("consumer").as_deref(), Some("alice"));
        resp.context().set("seen", "yes");
        assert_eq!(req.context().get("seen").as_deref(), Some("yes"));
    }
}
