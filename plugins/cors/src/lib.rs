//! The CORS plugin: answers browsers' preflight requests at the edge and adds
//! the CORS headers to the responses of allowed origins (keys as in Kong's).
//!
//! ```yaml
//! plugins:
//!   - name: cors
//!     config:
//!       origins:                          # required; `*` allows any origin
//!         - https://app.example.com
//!         - https://*.example.com         # one or more labels before .example.com
//!       methods: [GET, POST, PUT]         # default GET, HEAD, PUT, PATCH, POST, DELETE, OPTIONS
//!       headers: [authorization, content-type]  # default: echo Access-Control-Request-Headers
//!       exposed_headers: [x-request-id]   # default none
//!       max_age: 600                      # seconds; default: not sent
//!       credentials: true                 # default false
//! ```
//!
//! A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
//! never reaches the upstream: an allowed origin asking for an allowed method
//! gets `204` with the `Access-Control-Allow-*` headers, anything else `403`.
//! Other requests go on untouched; when their `Origin` is allowed, the
//! response (the upstream's, or the gateway's own error) gets
//! `Access-Control-Allow-Origin` and the rest. That header is `*` only when
//! `origins` is just `*` and `credentials` is off; otherwise it echoes the
//! origin, with `Vary: Origin`. Origins compare case-insensitively, and a
//! default port (`:443` for https, `:80` for http) is the same as none.

use plugin_sdk::prelude::*;
use serde::de::{Deserializer, Error as _};

const ORIGIN: &str = "origin";
const REQUEST_METHOD: &str = "access-control-request-method";
const REQUEST_HEADERS: &str = "access-control-request-headers";
const ALLOW_ORIGIN: &str = "access-control-allow-origin";
const ALLOW_METHODS: &str = "access-control-allow-methods";
const ALLOW_HEADERS: &str = "access-control-allow-headers";
const ALLOW_CREDENTIALS: &str = "access-control-allow-credentials";
const EXPOSE_HEADERS: &str = "access-control-expose-headers";
const MAX_AGE: &str = "access-control-max-age";
const VARY: &str = "vary";

/// The CORS headers of a response, which this plugin alone decides.
const RESPONSE_HEADERS: [&str; 6] = [
    ALLOW_ORIGIN,
    ALLOW_CREDENTIALS,
    EXPOSE_HEADERS,
    ALLOW_METHODS,
    ALLOW_HEADERS,
    MAX_AGE,
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `*`, an origin (`https://app.example.com`) or a pattern
    /// (`https://*.example.com`). At least one.
    #[serde(deserialize_with = "non_empty_origins")]
    pub origins: Vec<OriginRule>,
    /// Methods a preflight may ask for.
    #[serde(default = "default_methods", deserialize_with = "non_empty_methods")]
    pub methods: Vec<Method>,
    /// Request headers a preflight allows; none means echo what it asks for.
    #[serde(default)]
    pub headers: Vec<HeaderName>,
    /// Response headers the browser lets scripts read.
    #[serde(default)]
    pub exposed_headers: Vec<HeaderName>,
    /// How long (seconds) a browser may cache a preflight answer.
    #[serde(default)]
    pub max_age: Option<u64>,
    /// Allow cookies and HTTP authentication on cross-origin requests.
    #[serde(default)]
    pub credentials: bool,
}

const EMPTY_ORIGINS: &str = "`origins` is empty: list the allowed origins, or `*` for any";
const EMPTY_METHODS: &str = "`methods` is empty: list the allowed methods, or leave it out";

fn non_empty_origins<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<OriginRule>, D::Error> {
    let list = Vec::deserialize(d)?;
    if list.is_empty() {
        return Err(D::Error::custom(EMPTY_ORIGINS));
    }
    Ok(list)
}

fn non_empty_methods<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Method>, D::Error> {
    let list = Vec::deserialize(d)?;
    if list.is_empty() {
        return Err(D::Error::custom(EMPTY_METHODS));
    }
    Ok(list)
}

fn default_methods() -> Vec<Method> {
    ["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS"]
        .into_iter()
        .map(|m| Method(m.to_string()))
        .collect()
}

/// One `origins` entry, checked as it is read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct OriginRule(Rule);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    /// `*`: any origin.
    Any,
    Exact(Origin),
    /// `scheme://*.host[:port]`: one or more labels before `.host`.
    Subdomains(Origin),
}

impl TryFrom<String> for OriginRule {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let text = text.trim();
        if text == "*" {
            return Ok(Self(Rule::Any));
        }
        let refuse = |why: &str| format!("`{text}` is not an origin: {why}");
        if !text.contains('*') {
            return Origin::parse(text)
                .map(|o| Self(Rule::Exact(o)))
                .map_err(|why| refuse(&why));
        }
        const WHERE: &str =
            "a `*` may only start the host, followed by a domain, as in `https://*.example.com`";
        if text.matches('*').count() > 1 {
            return Err(refuse("it has more than one `*`"));
        }
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| refuse("it has no scheme (write `https://*.example.com`)"))?;
        let suffix = rest.strip_prefix("*.").ok_or_else(|| refuse(WHERE))?;
        let origin = Origin::parse(&format!("{scheme}://{suffix}")).map_err(|why| refuse(&why))?;
        if origin.host.starts_with('[') {
            return Err(refuse(WHERE));
        }
        if origin.host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(refuse("an IP address has no subdomains"));
        }
        if !origin.host.trim_end_matches('.').contains('.') {
            // `https://*.com` would allow every site under a top-level domain.
            return Err(refuse(
                "a pattern needs a domain of two labels or more after `*.`, as in `https://*.example.com`",
            ));
        }
        Ok(Self(Rule::Subdomains(origin)))
    }
}

/// A parsed `scheme://host[:port]`, lower-cased, default port dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    /// Parses a serialised origin strictly; `Err` says what is wrong.
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.to_ascii_lowercase();
        let (scheme, rest) = text
            .split_once("://")
            .ok_or("it has no scheme (write `https://host`)")?;
        let mut chars = scheme.chars();
        if !chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            || !chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return Err(format!("`{scheme}` is not a scheme"));
        }
        if rest.contains(['/', '?', '#']) {
            return Err(
                "it has a path (an origin is `scheme://host[:port]`, with no trailing `/`)".into(),
            );
        }
        if rest.contains('@') {
            return Err("it has user info (`user@`)".into());
        }
        let (host, port) = match rest.strip_prefix('[') {
            // An IPv6 literal: `[::1]` or `[::1]:8080`.
            Some(inner) => {
                let close = inner.find(']').ok_or("its `[` is not closed")?;
                let address = &inner[..close];
                if address.is_empty()
                    || !address
                        .chars()
                        .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
                {
                    return Err(format!("`[{address}]` is not an IPv6 address"));
                }
                let after = &inner[close + 1..];
                let port = match after {
                    "" => None,
                    _ => Some(after.strip_prefix(':').ok_or("text follows its `]`")?),
                };
                (&rest[..close + 2], port)
            }
            None => match rest.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            },
        };
        if !host.starts_with('[') && !is_host_name(host) {
            return Err(format!(
                "`{host}` is not a host name (letters, digits, `-` and `.`)"
            ));
        }
        let port = match port {
            None => None,
            Some(port) => match port.parse::<u16>() {
                Ok(n) if n != 0 && port.bytes().all(|b| b.is_ascii_digit()) => Some(n),
                _ => return Err(format!("`{port}` is not a port")),
            },
        };
        let port = match (scheme, port) {
            ("http", Some(80)) | ("https", Some(443)) => None,
            (_, port) => port,
        };
        Ok(Self {
            scheme: scheme.to_string(),
            host: host.to_string(),
            port,
        })
    }
}

/// Non-empty labels of letters, digits and `-`, joined by `.`.
fn is_host_name(host: &str) -> bool {
    host.split('.').all(|label| {
        !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

/// An RFC 9110 token: what method and header names are made of.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

/// A `methods` entry: a token, upper-cased.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Method(String);

impl TryFrom<String> for Method {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let text = text.trim();
        if !is_token(text) {
            return Err(format!("`{text}` is not an HTTP method"));
        }
        Ok(Self(text.to_ascii_uppercase()))
    }
}

/// A `headers` or `exposed_headers` entry: a token, kept as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HeaderName(String);

impl TryFrom<String> for HeaderName {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let text = text.trim();
        if !is_token(text) {
            return Err(format!("`{text}` is not a header name"));
        }
        Ok(Self(text.to_string()))
    }
}

fn join<T>(list: &[T], name: impl Fn(&T) -> &str) -> Option<String> {
    (!list.is_empty()).then(|| list.iter().map(name).collect::<Vec<_>>().join(","))
}

pub struct Cors {
    config: Config,
    /// `origins` is just `*`.
    only_any: bool,
    allow_methods: String,
    allow_headers: Option<String>,
    expose_headers: Option<String>,
}

impl Plugin for Cors {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        // Deserialisation already refuses these; a config built in code may not.
        if config.origins.is_empty() {
            return Err(EMPTY_ORIGINS.into());
        }
        if config.methods.is_empty() {
            return Err(EMPTY_METHODS.into());
        }
        Ok(Self {
            only_any: config.origins.iter().all(|r| r.0 == Rule::Any),
            allow_methods: join(&config.methods, |m| &m.0).unwrap_or_default(),
            allow_headers: join(&config.headers, |h| &h.0),
            expose_headers: join(&config.exposed_headers, |h| &h.0),
            config,
        })
    }

    fn on_request(&self, request: &mut Request) -> Action {
        match self.preflight(request) {
            Some(answer) => Action::Respond(answer),
            None => Action::Continue,
        }
    }

    fn on_response(&self, response: &mut Response) {
        self.add_cors_headers(response);
    }
}

export_plugin!(Cors);

/// A header's value, unless absent or blank.
fn present(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

impl Cors {
    /// Whether a request from `origin` (an `Origin` header value) may be served.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        let origin = origin.trim();
        if origin.is_empty() {
            return false;
        }
        let parsed = Origin::parse(origin).ok();
        self.config
            .origins
            .iter()
            .any(|rule| match (&rule.0, &parsed) {
                // Any real origin; never `null` (sandboxed frames, files).
                (Rule::Any, Some(_)) => true,
                (Rule::Exact(allowed), Some(origin)) => allowed == origin,
                (Rule::Subdomains(base), Some(origin)) => {
                    origin.scheme == base.scheme
                        && origin.port == base.port
                        && origin
                            .host
                            .strip_suffix(&base.host)
                            .and_then(|sub| sub.strip_suffix('.'))
                            .is_some_and(|sub| !sub.is_empty())
                }
                (_, None) => false,
            })
    }

    /// Whether a preflight may ask for `method`.
    pub fn method_allowed(&self, method: &str) -> bool {
        let method = method.trim();
        self.config
            .methods
            .iter()
            .any(|m| m.0.eq_ignore_ascii_case(method))
    }

    /// The `Access-Control-Allow-Origin` value for an allowed `origin`.
    fn allow_origin(&self, origin: &str) -> String {
        if self.only_any && !self.config.credentials {
            "*".to_string()
        } else {
            origin.trim().to_string()
        }
    }

    /// The answer to a preflight request; `None` when `request` is not one.
    pub fn preflight(&self, request: &Request) -> Option<Response> {
        if request.method() != "OPTIONS" {
            return None;
        }
        let origin = present(request.headers().get(ORIGIN))?;
        let method = present(request.headers().get(REQUEST_METHOD))?;
        let one_origin = request.headers().get_all(ORIGIN).len() == 1;
        if !one_origin || !self.origin_allowed(&origin) {
            return Some(Response::error_for(
                request,
                403,
                "cors_origin_not_allowed",
                &format!("origin {origin} is not allowed"),
            ));
        }
        if !self.method_allowed(&method) {
            return Some(Response::error_for(
                request,
                403,
                "cors_method_not_allowed",
                &format!("method {method} is not allowed for cross-origin requests"),
            ));
        }
        let mut answer = Response::new(204)
            .with_header(ALLOW_ORIGIN, &self.allow_origin(&origin))
            .with_header(ALLOW_METHODS, &self.allow_methods);
        let allow_headers = match &self.allow_headers {
            Some(listed) => Some(listed.clone()),
            None => present(Some(request.headers().get_all(REQUEST_HEADERS).join(","))),
        };
        if let Some(allow_headers) = allow_headers {
            answer = answer.with_header(ALLOW_HEADERS, &allow_headers);
        }
        if let Some(max_age) = self.config.max_age {
            answer = answer.with_header(MAX_AGE, &max_age.to_string());
        }
        if self.config.credentials {
            answer = answer.with_header(ALLOW_CREDENTIALS, "true");
        }
        answer = answer.with_header(VARY, "Origin");
        if self.allow_headers.is_none() {
            answer = answer.with_header(VARY, "Access-Control-Request-Headers");
        }
        Some(answer)
    }

    /// The headers for a (non-preflight) response to a request from
    /// `origin`; none when the origin is not allowed.
    pub fn cors_headers(&self, origin: &str) -> Vec<(&'static str, String)> {
        if !self.origin_allowed(origin) {
            return Vec::new();
        }
        let allow = self.allow_origin(origin);
        let mut headers = Vec::with_capacity(4);
        if allow != "*" {
            headers.push((VARY, "Origin".to_string()));
        }
        headers.push((ALLOW_ORIGIN, allow));
        if let Some(exposed) = &self.expose_headers {
            headers.push((EXPOSE_HEADERS, exposed.clone()));
        }
        if self.config.credentials {
            headers.push((ALLOW_CREDENTIALS, "true".to_string()));
        }
        headers
    }

    /// The response hook, for a request that carried an `Origin` (other
    /// responses pass untouched): the route's CORS policy is this plugin's
    /// alone, so the upstream's own `Access-Control-*` headers are removed,
    /// then [`cors_headers`](Self::cors_headers) added for an allowed origin.
    /// A preflight's answer (this plugin's own) is left as it is.
    pub fn add_cors_headers(&self, response: &Response) {
        let head = response.request();
        let Some(origin) = present(head.header(ORIGIN)) else {
            return;
        };
        if head.method() == "OPTIONS" && present(head.header(REQUEST_METHOD)).is_some() {
            return;
        }
        for name in RESPONSE_HEADERS {
            response.headers().remove(name);
        }
        if head.header_all(ORIGIN).len() != 1 {
            return;
        }
        for (name, value) in self.cors_headers(&origin) {
            if name == VARY {
                if !varies_by_origin(&response.headers().get_all(VARY)) {
                    response.headers().append(VARY, &value);
                }
            } else {
                response.headers().insert(name, &value);
            }
        }
    }
}

/// Whether `Vary` lines already cover `Origin` (or everything, `*`).
fn varies_by_origin(lines: &[String]) -> bool {
    lines
        .iter()
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .any(|v| v == "*" || v.eq_ignore_ascii_case("origin"))
}

#[cfg(test)]
mod tests {
    use plugin_sdk::__runtime::parse_config;

    use super::*;

    fn cors(json: &str) -> Cors {
        let config = parse_config::<Config>(json)
            .unwrap_or_else(|e| panic!("bad test config {json}: {}: {}", e.field, e.message));
        Cors::new(config).unwrap_or_else(|e| panic!("refused {json}: {e}"))
    }

    /// The field path and message of a refused config.
    fn refused(json: &str) -> (String, String) {
        match parse_config::<Config>(json) {
            Ok(config) => match Cors::new(config) {
                Ok(_) => panic!("accepted {json}"),
                Err(message) => (String::new(), message),
            },
            Err(e) => (e.field, e.message),
        }
    }

    fn preflight_request(origin: &str, method: &str) -> Request {
        Request::new("OPTIONS", "/api")
            .with_header("Origin", origin)
            .with_header("Access-Control-Request-Method", method)
    }

    fn answer(cors: &Cors, request: &Request) -> Response {
        cors.preflight(request)
            .unwrap_or_else(|| panic!("not taken for a preflight: {request:?}"))
    }

    fn error_code(response: &Response) -> String {
        let body = response.body().unwrap_or_default();
        let json: serde_json::Value =
            serde_json::from_slice(&body).unwrap_or_else(|e| panic!("body not JSON: {e}"));
        json["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn header(response: &Response, name: &str) -> Option<String> {
        let all = response.headers().get_all(name);
        assert!(all.len() <= 1, "{name} sent {} times: {all:?}", all.len());
        all.into_iter().next()
    }

    #[test]
    fn exact_origins_match_case_insensitively_and_nothing_else() {
        let c = cors(r#"{"origins":["https://app.example.com","http://localhost:3000"]}"#);
        for ok in [
            "https://app.example.com",
            "HTTPS://App.Example.COM",
            "https://app.example.com:443",
            " https://app.example.com ",
            "http://localhost:3000",
        ] {
            assert!(c.origin_allowed(ok), "{ok} should be allowed");
        }
        for bad in [
            "https://evil.com",
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://app.example.com.evil.com",
            "https://evil.app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://user@app.example.com",
            "https://app.example.com.",
            "http://localhost",
            "http://localhost:3001",
            "null",
            "",
            "*",
        ] {
            assert!(!c.origin_allowed(bad), "{bad} should be refused");
        }
    }

    #[test]
    fn a_pattern_stands_for_one_or_more_labels_only() {
        let c = cors(r#"{"origins":["https://*.Example.com"]}"#);
        for ok in [
            "https://a.example.com",
            "https://a.b.example.com",
            "https://A-1.EXAMPLE.com",
            "https://a.example.com:443",
        ] {
            assert!(c.origin_allowed(ok), "{ok} should be allowed");
        }
        for bad in [
            "https://evil.com",
            "https://example.com",
            "https://.example.com",
            "https://a..example.com",
            "https://aexample.com",
            "https://a.example.com.evil.com",
            "https://evil.com/.example.com",
            "https://evil.com?.example.com",
            "https://evil.com#.example.com",
            "https://evil.com@a.example.com",
            "https://evil.com:.example.com",
            "https://a_b.example.com",
            "https://a b.example.com",
            "http://a.example.com",
            "wss://a.example.com",
            "https://a.example.com:8443",
            "https://a.example.com:.x",
            "null",
        ] {
            assert!(!c.origin_allowed(bad), "{bad} should be refused");
        }

        let with_port = cors(r#"{"origins":["http://*.dev.test:8080"]}"#);
        assert!(with_port.origin_allowed("http://x.dev.test:8080"));
        assert!(!with_port.origin_allowed("http://x.dev.test"));
        assert!(!with_port.origin_allowed("http://x.dev.test:8081"));
    }

    #[test]
    fn a_star_allows_any_origin_but_never_with_credentials() {
        let any = cors(r#"{"origins":["*"]}"#);
        assert!(any.origin_allowed("https://whoever.test"));
        assert!(
            !any.origin_allowed("null"),
            "`*` is any real origin, not `null`"
        );
        assert_eq!(
            any.cors_headers("https://whoever.test"),
            vec![(ALLOW_ORIGIN, "*".to_string())]
        );

        let credentialed = cors(r#"{"origins":["*"],"credentials":true}"#);
        assert_eq!(
            credentialed.cors_headers("https://whoever.test"),
            vec![
                (VARY, "Origin".to_string()),
                (ALLOW_ORIGIN, "https://whoever.test".to_string()),
                (ALLOW_CREDENTIALS, "true".to_string()),
            ]
        );
        let answer = answer(
            &credentialed,
            &preflight_request("https://whoever.test", "GET"),
        );
        assert_eq!(
            header(&answer, ALLOW_ORIGIN).as_deref(),
            Some("https://whoever.test")
        );
        assert_eq!(header(&answer, ALLOW_CREDENTIALS).as_deref(), Some("true"));

        // `*` among other origins: still any origin, but echoed.
        let mixed = cors(r#"{"origins":["https://a.test","*"]}"#);
        assert_eq!(
            mixed.cors_headers("https://b.test")[1],
            (ALLOW_ORIGIN, "https://b.test".to_string())
        );
    }

    #[test]
    fn an_allowed_preflight_is_answered_with_every_header() {
        let c = cors(
            r#"{"origins":["https://app.example.com"],"methods":["get","POST"],"headers":["Authorization","Content-Type"],"max_age":600,"credentials":true}"#,
        );
        let request = preflight_request("https://app.example.com", "POST")
            .with_header("Access-Control-Request-Headers", "x-ignored");
        assert!(matches!(
            c.on_request(&mut request.clone()),
            Action::Respond(_)
        ));
        let answer = answer(&c, &request);
        assert_eq!(answer.status(), 204);
        assert_eq!(answer.body().unwrap_or_default(), Vec::<u8>::new());
        assert_eq!(
            answer.headers().lines(),
            [
                (ALLOW_ORIGIN, "https://app.example.com"),
                (ALLOW_METHODS, "GET,POST"),
                (ALLOW_HEADERS, "Authorization,Content-Type"),
                (MAX_AGE, "600"),
                (ALLOW_CREDENTIALS, "true"),
                (VARY, "Origin"),
            ]
            .map(|(n, v)| (n.to_string(), v.to_string()))
        );
    }

    #[test]
    fn defaults_without_credentials_answer_with_a_star() {
        let c = cors(r#"{"origins":["*"]}"#);
        let answer = answer(&c, &preflight_request("https://x.test", "delete"));
        assert_eq!(header(&answer, ALLOW_ORIGIN).as_deref(), Some("*"));
        assert_eq!(
            header(&answer, ALLOW_METHODS).as_deref(),
            Some("GET,HEAD,PUT,PATCH,POST,DELETE,OPTIONS")
        );
        assert_eq!(header(&answer, ALLOW_CREDENTIALS), None);
        assert_eq!(header(&answer, MAX_AGE), None);
        assert_eq!(header(&answer, ALLOW_HEADERS), None);
    }

    #[test]
    fn without_configured_headers_the_requested_ones_are_echoed() {
        let c = cors(r#"{"origins":["https://a.test"]}"#);
        let request = preflight_request("https://a.test", "PUT")
            .with_header("Access-Control-Request-Headers", "content-type, x-token");
        let answer = answer(&c, &request);
        assert_eq!(
            header(&answer, ALLOW_HEADERS).as_deref(),
            Some("content-type, x-token")
        );
        assert_eq!(
            answer.headers().get_all(VARY),
            vec!["Origin", "Access-Control-Request-Headers"]
        );

        // Nothing asked, nothing allowed; the answer still varies by the header.
        let bare = self::answer(&c, &preflight_request("https://a.test", "PUT"));
        assert_eq!(header(&bare, ALLOW_HEADERS), None);
        assert_eq!(bare.headers().get_all(VARY).len(), 2);

        // Configured headers are sent as they are, and do not vary.
        let listed = cors(r#"{"origins":["https://a.test"],"headers":["x-a"]}"#);
        let answer = self::answer(&listed, &request);
        assert_eq!(header(&answer, ALLOW_HEADERS).as_deref(), Some("x-a"));
        assert_eq!(answer.headers().get_all(VARY), vec!["Origin"]);
    }

    #[test]
    fn a_preflight_from_a_refused_origin_or_for_a_refused_method_gets_403() {
        let c = cors(r#"{"origins":["https://*.example.com"],"methods":["GET"]}"#);
        let denied = answer(&c, &preflight_request("https://example.com", "GET"));
        assert_eq!(denied.status(), 403);
        assert_eq!(error_code(&denied), "cors_origin_not_allowed");
        assert_eq!(header(&denied, ALLOW_ORIGIN), None);
        let body = String::from_utf8(denied.body().unwrap_or_default()).unwrap_or_default();
        assert!(
            body.contains("origin https://example.com is not allowed"),
            "{body}"
        );

        let wrong_method = answer(&c, &preflight_request("https://a.example.com", "DELETE"));
        assert_eq!(wrong_method.status(), 403);
        assert_eq!(error_code(&wrong_method), "cors_method_not_allowed");
        assert_eq!(header(&wrong_method, ALLOW_ORIGIN), None);
    }

    #[test]
    fn only_options_with_origin_and_request_method_is_a_preflight() {
        let c = cors(r#"{"origins":["https://a.test"]}"#);
        for request in [
            Request::new("OPTIONS", "/").with_header("origin", "https://a.test"),
            Request::new("OPTIONS", "/").with_header("access-control-request-method", "GET"),
            Request::new("OPTIONS", "/")
                .with_header("origin", "")
                .with_header("access-control-request-method", "GET"),
            Request::new("GET", "/")
                .with_header("origin", "https://a.test")
                .with_header("access-control-request-method", "GET"),
            Request::new("OPTIONS", "/"),
        ] {
            assert!(c.preflight(&request).is_none(), "{request:?}");
            assert!(matches!(
                c.on_request(&mut request.clone()),
                Action::Continue
            ));
        }
    }

    #[test]
    fn responses_to_allowed_origins_get_the_headers() {
        let c = cors(
            r#"{"origins":["https://a.test"],"exposed_headers":["x-request-id","x-total"],"credentials":true}"#,
        );
        let request = Request::new("GET", "/").with_header("Origin", "https://a.test");
        // An upstream answer, and the gateway's own 502, alike.
        for status in [200, 502] {
            let mut response = Response::new(status)
                .with_header("vary", "Accept-Encoding")
                .with_request(&request);
            c.on_response(&mut response);
            assert_eq!(
                header(&response, ALLOW_ORIGIN).as_deref(),
                Some("https://a.test")
            );
            assert_eq!(
                header(&response, EXPOSE_HEADERS).as_deref(),
                Some("x-request-id,x-total")
            );
            assert_eq!(
                header(&response, ALLOW_CREDENTIALS).as_deref(),
                Some("true")
            );
            assert_eq!(
                response.headers().get_all(VARY),
                vec!["Accept-Encoding", "Origin"]
            );
        }

        // Without credentials and with only `*`: a star and no Vary.
        let any = cors(r#"{"origins":["*"]}"#);
        let response = Response::new(200).with_request(&request);
        any.add_cors_headers(&response);
        assert_eq!(
            response.headers().lines(),
            vec![(ALLOW_ORIGIN.to_string(), "*".to_string())]
        );
    }

    #[test]
    fn other_responses_are_left_alone() {
        let c = cors(r#"{"origins":["https://a.test"]}"#);
        for request in [
            Request::new("GET", "/"),
            Request::new("GET", "/").with_header("origin", "https://evil.test"),
            Request::new("GET", "/").with_header("origin", "null"),
        ] {
            let response = Response::new(200).with_request(&request);
            c.add_cors_headers(&response);
            assert!(response.headers().is_empty(), "{request:?}");
        }

        // The upstream's own CORS headers give way to the plugin's policy.
        let request = Request::new("GET", "/").with_header("origin", "https://a.test");
        let response = Response::new(200)
            .with_header("access-control-allow-origin", "*")
            .with_header("access-control-allow-credentials", "true")
            .with_request(&request);
        c.add_cors_headers(&response);
        assert_eq!(
            response.headers().get_all(ALLOW_ORIGIN),
            vec!["https://a.test"]
        );
        assert!(!response.headers().contains(ALLOW_CREDENTIALS));
        let stranger = Request::new("GET", "/").with_header("origin", "https://evil.test");
        let response = Response::new(200)
            .with_header("access-control-allow-origin", "*")
            .with_header("x-kept", "1")
            .with_request(&stranger);
        c.add_cors_headers(&response);
        assert_eq!(
            response.headers().lines(),
            vec![("x-kept".to_string(), "1".to_string())]
        );

        // Two Origin headers are no origin at all.
        let twice = Request::new("GET", "/")
            .with_header("origin", "https://a.test")
            .with_header("origin", "https://evil.test");
        let response = Response::new(200).with_request(&twice);
        c.add_cors_headers(&response);
        assert!(response.headers().is_empty());
        let preflight = Request::new("OPTIONS", "/")
            .with_header("origin", "https://a.test")
            .with_header("origin", "https://a.test")
            .with_header(REQUEST_METHOD, "GET");
        assert_eq!(c.preflight(&preflight).map(|r| r.status()), Some(403));

        // A Vary that already names Origin is not repeated.
        let response = Response::new(200)
            .with_header("vary", "accept, ORIGIN")
            .with_request(&request);
        c.add_cors_headers(&response);
        assert_eq!(response.headers().get_all(VARY), vec!["accept, ORIGIN"]);
        assert!(response.headers().contains(ALLOW_ORIGIN));
    }

    #[test]
    fn the_response_hook_adds_nothing_to_the_plugins_own_answers() {
        let c =
            cors(r#"{"origins":["https://a.test"],"exposed_headers":["x-id"],"credentials":true}"#);
        for request in [
            preflight_request("https://a.test", "GET"),
            preflight_request("https://evil.test", "GET"),
            preflight_request("https://a.test", "TRACE"),
        ] {
            let mut response = answer(&c, &request).with_request(&request);
            let before = response.headers().lines();
            c.on_response(&mut response);
            assert_eq!(response.headers().lines(), before, "{request:?}");
        }
    }

    #[test]
    fn bad_origins_are_refused_at_their_path() {
        for (bad, why) in [
            ("app.example.com", "no scheme"),
            ("*.example.com", "no scheme"),
            ("https://app.example.com/", "has a path"),
            ("https://app.example.com/api", "has a path"),
            ("https://*.example.com/x", "has a path"),
            ("https://app.example.com?x", "has a path"),
            ("https://user@app.example.com", "user info"),
            ("https://", "not a host name"),
            ("https://a..example.com", "not a host name"),
            ("https://app_1.example.com", "not a host name"),
            ("https://app.example.com:99999", "not a port"),
            ("https://app.example.com:", "not a port"),
            ("https://app.example.com:+80", "not a port"),
            ("1http://a.test", "not a scheme"),
            ("https://[::1", "not closed"),
            ("https://[nope]", "not an IPv6 address"),
            ("https://*example.com", "may only start the host"),
            ("https://a.*.example.com", "may only start the host"),
            ("https://*", "may only start the host"),
            ("*://a.example.com", "may only start the host"),
            ("https://*.[::1]", "may only start the host"),
            ("https://*.*.example.com", "more than one `*`"),
            ("https://*.com", "two labels or more"),
            ("https://*.0.0.1", "an IP address has no subdomains"),
            ("null", "no scheme"),
        ] {
            let json = format!(r#"{{"origins":["https://ok.test","*",{bad:?}]}}"#);
            let (field, message) = refused(&json);
            assert_eq!(field, "origins[2]", "{bad}");
            assert!(message.contains(why), "{bad}: {message}");
            assert!(
                message.contains(&format!("`{bad}` is not an origin")),
                "{message}"
            );
        }
        // IPv6 literals are origins too.
        let c = cors(r#"{"origins":["http://[::1]:8080"]}"#);
        assert!(c.origin_allowed("http://[::1]:8080"));
        assert!(!c.origin_allowed("http://[::2]:8080"));
    }

    #[test]
    fn other_bad_configs_are_refused_with_their_path() {
        let cases = [
            (r#"{"origins":[]}"#, "origins", "`origins` is empty"),
            (r#"{}"#, "", "missing field `origins`"),
            (
                r#"{"origins":["*"],"methods":[]}"#,
                "methods",
                "`methods` is empty",
            ),
            (
                r#"{"origins":["*"],"methods":["GET","GE T"]}"#,
                "methods[1]",
                "not an HTTP method",
            ),
            (
                r#"{"origins":["*"],"headers":["a,b"]}"#,
                "headers[0]",
                "not a header name",
            ),
            (
                r#"{"origins":["*"],"exposed_headers":[""]}"#,
                "exposed_headers[0]",
                "not a header name",
            ),
            (
                r#"{"origins":["*"],"max_age":-1}"#,
                "max_age",
                "invalid value",
            ),
            (
                r#"{"origins":["*"],"credentials":"yes"}"#,
                "credentials",
                "invalid type",
            ),
            (
                r#"{"origins":["*"],"origin":["*"]}"#,
                "origin",
                "unknown field",
            ),
        ];
        for (json, path, why) in cases {
            let (field, message) = refused(json);
            assert_eq!(field, path, "{json}");
            assert!(message.contains(why), "{json}: {message}");
        }
        // A config built in code is checked too.
        let config = Config {
            origins: Vec::new(),
            methods: default_methods(),
            headers: Vec::new(),
            exposed_headers: Vec::new(),
            max_age: None,
            credentials: false,
        };
        assert_eq!(Cors::new(config).err().as_deref(), Some(EMPTY_ORIGINS));
    }
}
