//! The request or response a hook reads and edits in place through host
//! calls (WIT `message`, `request`, `response`, `context`): nothing is copied
//! into the plugin unless it asks for it.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, StatusCode, Uri, request, response};

use crate::routing::Params;

/// The facts hooks may read, shared by every hook call of one request.
/// (The route's name is the instance's own: each chain entry belongs to one route.)
#[derive(Debug, Clone)]
pub struct HookContext(Arc<ContextData>);

#[derive(Debug)]
struct ContextData {
    request_id: HeaderValue,
    client_ip: HeaderValue,
    params: Params,
}

impl HookContext {
    pub fn new(request_id: &HeaderValue, client_ip: &HeaderValue, params: &Params) -> Self {
        Self(Arc::new(ContextData {
            request_id: request_id.clone(),
            client_ip: client_ip.clone(),
            params: params.clone(),
        }))
    }

    pub fn request_id(&self) -> String {
        lossy(&self.0.request_id)
    }

    pub fn client_address(&self) -> String {
        lossy(&self.0.client_ip)
    }

    pub fn params(&self) -> &Params {
        &self.0.params
    }
}

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
    pub context: Option<HookContext>,
    /// The first edit that was not valid HTTP; it fails the request once the
    /// hook returns.
    pub invalid: Option<String>,
}

/// A host call the current hook may not make (the request's method from a
/// response hook, say): it traps the plugin.
#[derive(Debug, thiserror::Error)]
#[error("{0} is not available in this hook")]
pub struct WrongHook(pub &'static str);

impl Exchange {
    pub fn new(message: Message, body: Option<Bytes>, context: HookContext) -> Self {
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
        self.headers()
            .map(|h| {
                h.iter()
                    .map(|(name, value)| (name.as_str().to_string(), lossy(value)))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn set_header(&mut self, name: &str, value: String, append: bool) -> Result<(), WrongHook> {
        let headers = self.headers_mut()?;
        match parse_header(name, value) {
            Ok((name, value)) if append => {
                headers.append(name, value);
            }
            Ok((name, value)) => {
                headers.insert(name, value);
            }
            Err(what) => self.reject(what),
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

    fn request(&self) -> Result<&request::Parts, WrongHook> {
        match &self.message {
            Message::Request(parts) => Ok(parts),
            _ => Err(WrongHook("the request")),
        }
    }

    fn request_mut(&mut self) -> Result<&mut request::Parts, WrongHook> {
        match &mut self.message {
            Message::Request(parts) => Ok(parts),
            _ => Err(WrongHook("the request")),
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

    pub fn set_path(&mut self, path: &str) -> Result<(), WrongHook> {
        let joined = join_path_and_query(path, self.request()?.uri.query());
        self.path_set = true;
        self.replace_path_and_query(joined)
    }

    pub fn set_query(&mut self, query: &str) -> Result<(), WrongHook> {
        let uri = &self.request()?.uri;
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

/// Header values that are not UTF-8 reach plugins with the bad bytes replaced.
fn lossy(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_exchange(uri: &str) -> Exchange {
        let (parts, ()) = http::Request::get(uri)
            .header("x-a", "1")
            .header("X-A", "2")
            .body(())
            .map(http::Request::into_parts)
            .unwrap_or_else(|e| panic!("{e}"));
        let context = HookContext::new(
            &HeaderValue::from_static("id"),
            &HeaderValue::from_static("127.0.0.1"),
            &Vec::new(),
        );
        Exchange::new(Message::Request(parts), None, context)
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
    fn the_wrong_hook_is_refused() {
        let mut ex = request_exchange("/a");
        assert!(ex.status().is_err());
        assert!(ex.set_status(200).is_err());
        ex.message = Message::None;
        assert!(ex.path().is_err());
        assert!(ex.set_header("x", "y".into(), false).is_err());
    }
}
