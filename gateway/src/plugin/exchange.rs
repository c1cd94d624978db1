//! The request or response a hook reads and edits in place through host
//! calls (WIT `message`, `request`, `response`, `context`): nothing is copied
//! into the plugin unless it asks for it.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, StatusCode, Uri, request, response};

use super::request_context::{RequestContext, lossy};

/// Most header lines a message may have for a plugin to add another, and in
/// an answer a plugin builds: past it the request fails with
/// `500 plugin_failed`, never a panic in the host's header map (which
/// cannot hold more than 32,768 entries).
pub const MAX_HEADER_LINES: usize = 1000;
/// Most bytes of header names and values plugins may add to one message,
/// and put in an answer they build.
pub const MAX_HEADER_BYTES: usize = 256 * 1024;

/// What the hook in progress works on.
#[derive(Debug, Default)]
pub enum Message {
    /// Between hooks (and during `init`): no message to read.
    #[default]
    None,
    Request(request::Parts),
    Response(response::Parts),
}

/// One message and its body while a chain's hooks run over it.
#[derive(Debug, Default)]
pub struct Exchange {
    pub message: Message,
    /// The buffered body, when some plugin of the chain asked for bodies or
    /// a plugin replaced it.
    pub body: Option<Bytes>,
    /// Whether the plugin being called asked for bodies (others get `none`).
    pub body_visible: bool,
    pub body_edited: bool,
    /// A plugin set the path: the route's own rewrite no longer applies.
    pub path_set: bool,
    /// The request's context; `None` outside a request (in `init`).
    pub context: Option<RequestContext>,
    /// The first edit that was not valid HTTP; it fails the request once the
    /// hook returns.
    pub invalid: Option<String>,
    /// Bytes of header names and values plugins set on this message.
    header_bytes_set: usize,
}

/// The parts of a request hooks read, wherever the request is kept.
struct RequestView<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
}

/// A host call the current hook may not make (the request's method from a
/// response hook, say): it traps the plugin.
#[derive(Debug, thiserror::Error)]
#[error("{0} is not available in this hook")]
pub struct WrongHook(pub &'static str);

impl Exchange {
    pub fn new(message: Message, body: Option<Bytes>, context: RequestContext) -> Self {
        Self {
            message,
            body,
            context: Some(context),
            ..Self::default()
        }
    }

    fn headers(&self) -> Option<&HeaderMap> {
        match &self.message {
            Message::Request(parts) => Some(&parts.headers),
            Message::Response(parts) => Some(&parts.headers),
            Message::None => None,
        }
    }

    fn headers_mut(&mut self) -> Result<&mut HeaderMap, WrongHook> {
        match &mut self.message {
            Message::Request(parts) => Ok(&mut parts.headers),
            Message::Response(parts) => Ok(&mut parts.headers),
            Message::None => Err(WrongHook("a message")),
        }
    }

    fn reject(&mut self, what: String) {
        self.invalid.get_or_insert(what);
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers()?.get(name).map(lossy)
    }

    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers()
            .map(|h| h.get_all(name).iter().map(lossy).collect())
            .unwrap_or_default()
    }

    pub fn header_lines(&self) -> Vec<(String, String)> {
        self.headers().map(lines).unwrap_or_default()
    }

    pub fn set_header(&mut self, name: &str, value: String, append: bool) -> Result<(), WrongHook> {
        self.header_bytes_set = self
            .header_bytes_set
            .saturating_add(name.len() + value.len());
        let too_many = self.header_bytes_set > MAX_HEADER_BYTES;
        let headers = self.headers_mut()?;
        if too_many || headers.len() >= MAX_HEADER_LINES {
            self.reject(format!(
                "header `{name}`: plugins may set at most {MAX_HEADER_BYTES} bytes of headers, on a message of at most {MAX_HEADER_LINES} lines"
            ));
            return Ok(());
        }
        let stored = match parse_header(name, value) {
            Ok((name, value)) if append => headers.try_append(name, value).map(drop),
            Ok((name, value)) => headers.try_insert(name, value).map(drop),
            Err(what) => {
                self.reject(what);
                return Ok(());
            }
        };
        if stored.is_err() {
            self.reject(format!("header `{name}`: the message has too many headers"));
        }
        Ok(())
    }

    pub fn remove_header(&mut self, name: &str) -> Result<bool, WrongHook> {
        // By `&str`: no name is allocated, and an invalid one is simply absent.
        Ok(self.headers_mut()?.remove(name).is_some())
    }

    pub fn body(&self) -> Option<Vec<u8>> {
        self.body_visible
            .then(|| self.body.as_ref().map(|b| b.to_vec()))
            .flatten()
    }

    pub fn set_body(&mut self, body: Vec<u8>) {
        self.body = Some(Bytes::from(body));
        self.body_edited = true;
    }

    /// The request: the one being handled in a request hook, the one that
    /// was sent upstream (read-only) in a response hook.
    fn request(&self) -> Result<RequestView<'_>, WrongHook> {
        match &self.message {
            Message::Request(parts) => Ok(RequestView {
                method: &parts.method,
                uri: &parts.uri,
                headers: &parts.headers,
            }),
            Message::Response(_) => self
                .context
                .as_ref()
                .and_then(RequestContext::request)
                .map(|head| RequestView {
                    method: &head.method,
                    uri: &head.uri,
                    headers: &head.headers,
                })
                .ok_or(WrongHook("the request")),
            Message::None => Err(WrongHook("the request")),
        }
    }

    fn request_mut(&mut self) -> Result<&mut request::Parts, WrongHook> {
        match &mut self.message {
            Message::Request(parts) => Ok(parts),
            Message::Response(_) => Err(WrongHook("changing the request")),
            Message::None => Err(WrongHook("the request")),
        }
    }

    pub fn method(&self) -> Result<String, WrongHook> {
        Ok(self.request()?.method.as_str().to_string())
    }

    pub fn set_method(&mut self, method: &str) -> Result<(), WrongHook> {
        let parts = self.request_mut()?;
        match Method::from_bytes(method.as_bytes()) {
            Ok(method) => parts.method = method,
            Err(_) => self.reject(format!("method `{method}`")),
        }
        Ok(())
    }

    pub fn path(&self) -> Result<String, WrongHook> {
        Ok(self.request()?.uri.path().to_string())
    }

    pub fn query(&self) -> Result<String, WrongHook> {
        Ok(self.request()?.uri.query().unwrap_or("").to_string())
    }

    pub fn request_header(&self, name: &str) -> Result<Option<String>, WrongHook> {
        Ok(self.request()?.headers.get(name).map(lossy))
    }

    pub fn request_header_all(&self, name: &str) -> Result<Vec<String>, WrongHook> {
        Ok(self
            .request()?
            .headers
            .get_all(name)
            .iter()
            .map(lossy)
            .collect())
    }

    pub fn request_header_lines(&self) -> Result<Vec<(String, String)>, WrongHook> {
        Ok(lines(self.request()?.headers))
    }

    pub fn set_path(&mut self, path: &str) -> Result<(), WrongHook> {
        let joined = join_path_and_query(path, self.request_mut()?.uri.query());
        self.path_set = true;
        self.replace_path_and_query(joined)
    }

    pub fn set_query(&mut self, query: &str) -> Result<(), WrongHook> {
        let uri = &self.request_mut()?.uri;
        let joined = join_path_and_query(uri.path(), Some(query));
        self.replace_path_and_query(joined)
    }

    /// Replaces the path and query with `joined`, which must be an
    /// origin-form path (starting with `/`) with its query.
    fn replace_path_and_query(&mut self, joined: String) -> Result<(), WrongHook> {
        let uri = &mut self.request_mut()?.uri;
        let parsed = joined
            .starts_with('/')
            .then(|| PathAndQuery::try_from(joined.as_str()).ok())
            .flatten();
        let Some(path_and_query) = parsed else {
            self.reject(format!("path `{joined}`"));
            return Ok(());
        };
        if uri.scheme().is_none() && uri.authority().is_none() {
            // Origin form, as almost every request arrives: no parts to carry over.
            *uri = Uri::from(path_and_query);
            return Ok(());
        }
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = Some(path_and_query);
        match Uri::from_parts(parts) {
            Ok(new) => *uri = new,
            Err(_) => self.reject(format!("path `{joined}`")),
        }
        Ok(())
    }

    fn response(&self) -> Result<&response::Parts, WrongHook> {
        match &self.message {
            Message::Response(parts) => Ok(parts),
            _ => Err(WrongHook("the response")),
        }
    }

    fn response_mut(&mut self) -> Result<&mut response::Parts, WrongHook> {
        match &mut self.message {
            Message::Response(parts) => Ok(parts),
            _ => Err(WrongHook("the response")),
        }
    }

    pub fn status(&self) -> Result<u16, WrongHook> {
        Ok(self.response()?.status.as_u16())
    }

    pub fn set_status(&mut self, status: u16) -> Result<(), WrongHook> {
        let parts = self.response_mut()?;
        match StatusCode::from_u16(status) {
            Ok(status) => parts.status = status,
            Err(_) => self.reject(format!("status {status}")),
        }
        Ok(())
    }
}

/// `path?query`, or the path alone when the query is empty.
fn join_path_and_query(path: &str, query: Option<&str>) -> String {
    let query = query.unwrap_or("");
    let mut joined = String::with_capacity(path.len() + 1 + query.len());
    joined.push_str(path);
    if !query.is_empty() {
        joined.push('?');
        joined.push_str(query);
    }
    joined
}

/// A plugin's header as HTTP, or what was wrong with it. The value's bytes
/// are kept, not copied.
pub fn parse_header(name: &str, value: String) -> Result<(HeaderName, HeaderValue), String> {
    let parsed_name =
        HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("header name `{name}`"))?;
    let parsed_value = HeaderValue::from_maybe_shared(Bytes::from(value))
        .map_err(|_| format!("value for header `{name}`"))?;
    Ok((parsed_name, parsed_value))
}

fn lines(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| (name.as_str().to_string(), lossy(value)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::request_context::RequestHead;
    use super::*;

    fn request_exchange(uri: &str) -> Exchange {
        let (parts, ()) = http::Request::get(uri)
            .header("x-a", "1")
            .header("X-A", "2")
            .body(())
            .map(http::Request::into_parts)
            .unwrap_or_else(|e| panic!("{e}"));
        Exchange::new(Message::Request(parts), None, RequestContext::default())
    }

    #[test]
    fn header_edits_apply_in_place() -> Result<(), WrongHook> {
        let mut ex = request_exchange("/a?q=1");
        assert_eq!(ex.header("X-a").as_deref(), Some("1"));
        assert_eq!(ex.header_all("x-a"), vec!["1", "2"]);
        ex.set_header("x-a", "3".into(), false)?;
        ex.set_header("x-b", "4".into(), true)?;
        assert_eq!(ex.header_all("x-a"), vec!["3"]);
        assert!(ex.remove_header("X-B")?);
        assert!(!ex.remove_header("x-b")?);
        assert!(!ex.remove_header("bad name")?);
        assert_eq!(ex.invalid, None);
        Ok(())
    }

    #[test]
    fn invalid_edits_are_remembered_not_applied() -> Result<(), WrongHook> {
        let mut ex = request_exchange("/a");
        ex.set_header("bad name", "x".into(), false)?;
        ex.set_header("x-c", "line\nbreak".into(), false)?;
        assert_eq!(ex.invalid.as_deref(), Some("header name `bad name`"));
        assert_eq!(ex.header("x-c"), None);
        Ok(())
    }

    #[test]
    fn path_and_query_edits_keep_each_other() -> Result<(), WrongHook> {
        let mut ex = request_exchange("/a?q=1");
        ex.set_query("q=2&r=3")?;
        ex.set_path("/b")?;
        assert_eq!(ex.path()?, "/b");
        assert_eq!(ex.query()?, "q=2&r=3");
        assert!(ex.path_set);
        ex.set_path("no-slash")?;
        assert_eq!(ex.invalid.as_deref(), Some("path `no-slash?q=2&r=3`"));
        assert_eq!(ex.path()?, "/b");
        Ok(())
    }

    #[test]
    fn a_query_on_a_path_that_is_not_origin_form_is_refused() -> Result<(), WrongHook> {
        let mut ex = request_exchange("*");
        ex.set_query("a=1")?;
        assert_eq!(ex.invalid.as_deref(), Some("path `*?a=1`"));
        assert_eq!(ex.path()?, "*");
        Ok(())
    }

    #[test]
    fn plugins_cannot_grow_a_message_past_its_header_limits() -> Result<(), WrongHook> {
        let mut ex = request_exchange("/a");
        for i in 0..MAX_HEADER_LINES * 3 {
            ex.set_header(&format!("x-flood-{i}"), "v".into(), true)?;
        }
        assert_eq!(ex.header_lines().len(), MAX_HEADER_LINES);
        assert!(
            ex.invalid.as_deref().is_some_and(|w| w.contains("at most")),
            "{:?}",
            ex.invalid
        );

        let mut ex = request_exchange("/a");
        let big = "v".repeat(MAX_HEADER_BYTES / 4);
        for _ in 0..8 {
            ex.set_header("x-big", big.clone(), false)?;
        }
        assert!(
            ex.invalid.is_some(),
            "bytes set are counted even when replacing"
        );
        Ok(())
    }

    #[test]
    fn the_wrong_hook_is_refused() {
        let mut ex = request_exchange("/a");
        assert!(ex.status().is_err());
        assert!(ex.set_status(200).is_err());
        ex.message = Message::None;
        assert!(ex.path().is_err());
        assert!(ex.set_header("x", "y".into(), false).is_err());
    }

    #[test]
    fn a_response_hook_reads_the_request_it_was_sent_but_cannot_change_it() -> Result<(), WrongHook>
    {
        let mut ex = request_exchange("/a?q=1");
        let (parts, ()) = http::Response::new(()).into_parts();
        ex.message = Message::Response(parts);
        assert!(ex.path().is_err(), "no request was kept");
        let (head, ()) = http::Request::post("/sent?x=2")
            .header("origin", "https://a.test")
            .body(())
            .map(http::Request::into_parts)
            .unwrap_or_else(|e| panic!("{e}"));
        if let Some(ctx) = ex.context.as_mut() {
            ctx.set_request(RequestHead::of(&head.method, &head.uri, &head.headers));
        }
        assert_eq!(ex.method()?, "POST");
        assert_eq!(ex.path()?, "/sent");
        assert_eq!(ex.query()?, "x=2");
        assert_eq!(
            ex.request_header("Origin")?.as_deref(),
            Some("https://a.test")
        );
        assert_eq!(ex.request_header_lines()?.len(), 1);
        assert!(ex.set_path("/b").is_err());
        assert!(ex.set_method("GET").is_err());
        assert_eq!(ex.header("origin"), None, "the message is the response");
        Ok(())
    }
}
