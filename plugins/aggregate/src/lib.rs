//! The aggregate plugin: one client call fans out to several upstream
//! pools at once, and is answered with one JSON object merging their
//! answers. The plugin always answers itself: the route's own upstream is
//! never called.
//!
//! ```yaml
//! plugins:                                   # in the gateway config
//!   grants:
//!     aggregate: { outbound: { pools: [users, billing] } }   # the pools it may call
//! routes:
//!   - name: dashboard
//!     match: { path: "/dashboard/{id}" }
//!     upstream: users                        # required by the route; never called
//!     plugins:
//!       - name: aggregate
//!         config:
//!           methods: [GET]                   # the default; others get 405 with Allow
//!           timeout: 2s                      # the whole batch; default 2s; 1ms to 60s
//!           pass_headers: [x-user-id]        # default: every request header but a few (below)
//!           parts:                           # 1 to 16
//!             - name: profile                # its key in the answer: [A-Za-z0-9_-]+, not `_…`
//!               pool: users                  # an upstream pool granted to the plugin
//!               method: GET                  # the default
//!               path: "/users/{id}"          # {NAME}, {query.NAME}, {context.NAME}
//!               required: true               # the default
//!               timeout: 500ms               # default: the batch's; at most the batch's
//!               pointer: /data               # optional: keep only this part of the answer
//!             - name: balance
//!               pool: billing
//!               path: "/accounts/{context.consumer}/balance?currency={query.currency}"
//!               required: false
//! ```
//!
//! For each request the plugin fills every part's `path`: `{NAME}` is the
//! route's path parameter, `{query.NAME}` the first value of the request's
//! query parameter (decoded: `%XX`, and `+` as a space), `{context.NAME}` a
//! value an earlier plugin of the chain set (`consumer`, from auth). Each
//! value is percent-encoded for where it lands (every byte but `A-Z a-z 0-9
//! - . _ ~`), so it stays one path segment or one query value. A value that
//! is missing or empty fails its part (`no value for {query.currency}`)
//! without a call, as does a value of `.` or `..` in the path. Then every
//! filled part is sent in one batch (`outbound.send_all`): the calls run at
//! once, each within its own `timeout` and all within the batch's. Calls
//! have no body and carry the request's headers (see `pass_headers`), plus
//! the `x-request-id` and trace headers the gateway adds itself.
//!
//! A part succeeds with a `2xx` answer whose body is JSON (whatever its
//! `content-type`), reduced to what `pointer` (RFC 6901, as
//! `serde_json::Value::pointer` reads it) names. The JSON is passed on as
//! the upstream wrote it, never re-serialised: key order and numbers stay
//! exact. Otherwise it fails, with a reason: `answered 503`, `the answer is
//! not JSON`, `no /data in the answer`, `timed out`, `the answer is over
//! 1048576 bytes` (the grant's `max_body`), or the gateway's words for an
//! unavailable pool.
//!
//! The answer: when a required part fails, `502` with the gateway's JSON
//! error, code `aggregate_part_failed`, naming the first one in config
//! order (`required part "profile" failed: timed out`). A required part
//! that cannot be filled fails the request before anything is sent. Else
//! `200`, `application/json`, one object with each part's value under its
//! name in config order, `null` for a failed optional part; when any
//! failed, also `"_failed": [{"part": "balance", "reason": "timed out"}]`
//! and the header `x-aggregate-partial: balance` (failed part names, comma
//! separated, in config order). Another method than `methods` gets `405
//! method_not_allowed` with `Allow: GET` (the methods, comma separated).
//!
//! `pass_headers` left out passes every request header but `host`,
//! `content-length`, `content-type`, `transfer-encoding`, `expect`,
//! `cookie` and `authorization` (the client's credentials for the gateway;
//! list them to pass them), `accept-encoding` (answers are read uncompressed), conditional ones
//! (`range`, `if-*`: a part answering 304 or 206 would fail), the hop-by-hop ones
//! (`connection` and those it names, `keep-alive`, `te`, `trailer`,
//! `upgrade`, `proxy-authorization`, `proxy-connection`) and those the
//! gateway adds itself (`x-request-id`, `traceparent`, `tracestate`): so
//! identity headers set by earlier plugins (auth's `x-user-id`,
//! `x-consumer`) and the client's credentials go along. A list passes only
//! those headers (names in any case; the excluded ones cannot be listed;
//! `[]` passes none).
//!
//! Every check is made as the config is read, and a refusal names its
//! field (see [`config`]); a pool the plugin is not granted is refused at
//! its `parts[i].pool`. The plugin needs the `outbound` grant; a gateway
//! that does not grant it refuses to load the plugin.

pub mod config;
pub mod json;
pub mod template;

// The SDK re-exports `Call`, `Reply` and `CallError` but not the header
// record a call's headers are made of.
use plugin_sdk::outbound::Header;
use plugin_sdk::outbound::{Call, CallError, Reply};
use plugin_sdk::prelude::*;
use serde::Serialize;

pub use config::Config;
use config::{NEVER_PASSED, Part, PassHeaders};

/// The response header naming the parts that failed.
pub const PARTIAL_HEADER: &str = "x-aggregate-partial";
/// The answer's key listing the parts that failed and why.
pub const FAILED_KEY: &str = "_failed";

pub struct Aggregate {
    cfg: Config,
    /// The `Allow` header of a `405`.
    allow: String,
}

/// A part that failed, and why, as `_failed` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub part: String,
    pub reason: String,
}

/// The plugin's answer to a request, and the parts that failed.
#[derive(Debug)]
pub struct Answer {
    pub response: Response,
    pub failed: Vec<Failure>,
}

impl Plugin for Aggregate {
    type Config = Config;

    /// Every check is made as the config is read (see [`config`]).
    fn new(cfg: Config) -> Result<Self, String> {
        let allow = cfg.methods.join(", ");
        Ok(Self { cfg, allow })
    }

    fn on_request(&self, req: &mut Request) -> Action {
        let answer = self.answer(req, plugin_sdk::outbound::send_all);
        if !answer.failed.is_empty() {
            let failed: Vec<String> = answer
                .failed
                .iter()
                .map(|f| format!("part \"{}\" failed: {}", f.part, f.reason))
                .collect();
            let line = format!(
                "request {}: {} ({})",
                req.request_id(),
                failed.join("; "),
                answer.response.status()
            );
            if answer.response.status() == 502 {
                log::warn(&line);
            } else {
                log::info(&line);
            }
        }
        Action::Respond(answer.response)
    }
}

impl Aggregate {
    /// The answer to `req`, sending its calls with `send_all` (the gateway's
    /// [`plugin_sdk::outbound::send_all`], or a fake in tests), once.
    pub fn answer(
        &self,
        req: &Request,
        send_all: impl FnOnce(&[Call], u32) -> Vec<Result<Reply, CallError>>,
    ) -> Answer {
        let method = req.method();
        if !self.cfg.methods.contains(&method) {
            return Answer {
                response: self.refuse_method(req, &method),
                failed: Vec::new(),
            };
        }
        let query = req.query();
        let paths: Vec<Result<String, String>> = self
            .cfg
            .parts
            .iter()
            .map(|part| {
                part.path
                    .fill(|placeholder| template::value_of(req, &query, placeholder))
            })
            .collect();
        // The answer is a 502 whatever the other parts say: call none.
        let unfilled = self.cfg.parts.iter().zip(&paths).find_map(|(part, path)| {
            let why = path.as_ref().err().filter(|_| part.required)?;
            Some(Failure {
                part: part.name.clone(),
                reason: why.clone(),
            })
        });
        if let Some(failure) = unfilled {
            return Answer {
                response: part_failed(req, &failure),
                failed: vec![failure],
            };
        }
        let replies = if paths.iter().any(Result::is_ok) {
            let headers = headers_to_pass(&self.cfg.pass_headers, req.headers().lines());
            send_all(&self.calls(&paths, &headers), self.cfg.timeout_ms)
        } else {
            Vec::new()
        };
        let mut replies = replies.into_iter();
        let outcomes: Vec<Result<String, String>> = self
            .cfg
            .parts
            .iter()
            .zip(paths)
            .map(|(part, path)| {
                path?;
                // The gateway answers every call; should it not, say so.
                let reply = replies.next().unwrap_or_else(|| {
                    Err(CallError::Unavailable(
                        "the gateway returned no answer for this call".into(),
                    ))
                });
                read_reply(part, reply)
            })
            .collect();
        self.merge(req, outcomes)
    }

    /// One call per filled path, in config order.
    fn calls(&self, paths: &[Result<String, String>], headers: &[(String, String)]) -> Vec<Call> {
        self.cfg
            .parts
            .iter()
            .zip(paths)
            .filter_map(|(part, path)| {
                Some(Call {
                    pool: part.pool.clone(),
                    method: part.method.clone(),
                    path_and_query: path.as_ref().ok()?.clone(),
                    headers: headers
                        .iter()
                        .map(|(name, value)| Header {
                            name: name.clone(),
                            value: value.clone(),
                        })
                        .collect(),
                    body: Vec::new(),
                    timeout_ms: part.timeout_ms,
                })
            })
            .collect()
    }

    /// The merged answer from each part's JSON text or reason, in config
    /// order: `502` if a required part failed, else `200`.
    pub fn merge(&self, req: &Request, outcomes: Vec<Result<String, String>>) -> Answer {
        let failed: Vec<(&Part, Failure)> = self
            .cfg
            .parts
            .iter()
            .zip(&outcomes)
            .filter_map(|(part, outcome)| {
                let reason = outcome.as_ref().err()?;
                Some((
                    part,
                    Failure {
                        part: part.name.clone(),
                        reason: reason.clone(),
                    },
                ))
            })
            .collect();
        if let Some((_, failure)) = failed.iter().find(|(part, _)| part.required) {
            return Answer {
                response: part_failed(req, failure),
                failed: failed.into_iter().map(|(_, f)| f).collect(),
            };
        }
        let failed: Vec<Failure> = failed.into_iter().map(|(_, f)| f).collect();
        let mut body = String::from("{");
        for (i, (part, outcome)) in self.cfg.parts.iter().zip(&outcomes).enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&json_string(&part.name));
            body.push(':');
            body.push_str(outcome.as_deref().unwrap_or("null"));
        }
        if !failed.is_empty() {
            body.push_str(&format!(",\"{FAILED_KEY}\":"));
            body.push_str(&serde_json::to_string(&failed).unwrap_or_else(|_| "[]".into()));
        }
        body.push('}');
        let mut response = Response::new(200)
            .with_header("content-type", "application/json")
            .with_body(body.into_bytes());
        if !failed.is_empty() {
            let names: Vec<&str> = failed.iter().map(|f| f.part.as_str()).collect();
            response = response.with_header(PARTIAL_HEADER, &names.join(","));
        }
        Answer { response, failed }
    }

    fn refuse_method(&self, req: &Request, method: &str) -> Response {
        Response::error_for(
            req,
            405,
            "method_not_allowed",
            &format!(
                "{} is not allowed here: use {}",
                method.chars().take(32).collect::<String>(),
                self.allow
            ),
        )
        .with_header("allow", &self.allow)
    }
}

/// The `502` for a required part that failed.
fn part_failed(req: &Request, failure: &Failure) -> Response {
    Response::error_for(
        req,
        502,
        "aggregate_part_failed",
        &format!(
            "required part \"{}\" failed: {}",
            failure.part, failure.reason
        ),
    )
}

/// A part's value (JSON text) from its call's outcome, or why there is none.
pub fn read_reply(part: &Part, reply: Result<Reply, CallError>) -> Result<String, String> {
    let reply = reply.map_err(|e| match e {
        CallError::TimedOut => "timed out".to_string(),
        CallError::TooLarge(limit) => format!("the answer is over {limit} bytes"),
        CallError::Unavailable(why) | CallError::BadCall(why) | CallError::NotGranted(why) => why,
    })?;
    if !(200..300).contains(&reply.status) {
        return Err(format!("answered {}", reply.status));
    }
    let text = json::json_text(&reply.body).ok_or("the answer is not JSON")?;
    match &part.pointer {
        None => Ok(text.to_string()),
        Some(pointer) => pointer
            .find(text)
            .map(str::to_string)
            .ok_or_else(|| format!("no {} in the answer", pointer.as_str())),
    }
}

/// The request headers every call carries, from the request's `lines`
/// (names in lower case, as the gateway gives them), in their order.
pub fn headers_to_pass(pass: &PassHeaders, lines: Vec<(String, String)>) -> Vec<(String, String)> {
    match pass {
        PassHeaders::Only(names) => lines
            .into_iter()
            .filter(|(name, _)| names.iter().any(|n| n.eq_ignore_ascii_case(name)))
            .collect(),
        PassHeaders::AllButNeverPassed => {
            // Headers the request's `Connection` names are hop-by-hop too.
            let hop_by_hop: Vec<String> = lines
                .iter()
                .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
                .flat_map(|(_, value)| value.split(','))
                .map(|token| token.trim().to_ascii_lowercase())
                .filter(|token| !token.is_empty())
                .collect();
            lines
                .into_iter()
                .filter(|(name, _)| {
                    let name = name.to_ascii_lowercase();
                    !NEVER_PASSED.iter().any(|(never, _)| *never == name)
                        && !hop_by_hop.contains(&name)
                })
                .collect()
        }
    }
}

/// `text` as a JSON string.
fn json_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

export_plugin!(Aggregate);

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use serde_json::{Value, json};

    use super::*;

    fn plugin(config: Value) -> Aggregate {
        let cfg = plugin_sdk::__runtime::parse_config::<Config>(&config.to_string())
            .unwrap_or_else(|e| panic!("{}: {}", e.field, e.message));
        Aggregate::new(cfg).unwrap_or_else(|e| panic!("{e}"))
    }

    fn dashboard() -> Aggregate {
        plugin(json!({
            "timeout": "3s",
            "parts": [
                { "name": "profile", "pool": "users", "path": "/users/{id}", "pointer": "/data",
                  "timeout": "500ms" },
                { "name": "balance", "pool": "billing",
                  "path": "/accounts/{context.consumer}/balance?currency={query.currency}",
                  "required": false },
                { "name": "orders", "pool": "orders", "method": "POST",
                  "path": "/orders/search?limit=5", "required": false },
            ]
        }))
    }

    fn request() -> Request {
        let req = Request::new("GET", "/dashboard/7?currency=EUR")
            .with_param("id", "7")
            .with_header("x-user-id", "u-1")
            .with_header("host", "api.test")
            .with_header("accept-encoding", "gzip");
        req.context().set("consumer", "alice");
        req
    }

    fn reply(status: u16, body: &str) -> Result<Reply, CallError> {
        Ok(Reply {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        })
    }

    /// A fake `send_all` answering with `replies`, keeping the calls it got.
    fn fake(
        sent: &RefCell<Vec<(Vec<Call>, u32)>>,
        replies: Vec<Result<Reply, CallError>>,
    ) -> impl FnOnce(&[Call], u32) -> Vec<Result<Reply, CallError>> + '_ {
        move |calls, batch| {
            sent.borrow_mut().push((calls.to_vec(), batch));
            replies
        }
    }

    fn body_of(resp: &Response) -> String {
        String::from_utf8(resp.body().unwrap_or_default()).unwrap_or_default()
    }

    fn json_of(resp: &Response) -> Value {
        serde_json::from_slice(&resp.body().unwrap_or_default()).unwrap_or_default()
    }

    #[test]
    fn all_parts_go_in_one_batch_with_their_paths_headers_and_timeouts() {
        let sent = RefCell::new(Vec::new());
        let answer = dashboard().answer(
            &request(),
            fake(
                &sent,
                vec![
                    reply(200, r#"{"data": {"id": 7, "name": "Ann"}}"#),
                    reply(200, r#"{"amount": 12.50}"#),
                    reply(201, "[1, 2]"),
                ],
            ),
        );
        let sent = sent.into_inner();
        let [(calls, batch)] = &sent[..] else {
            panic!("{} batches", sent.len())
        };
        assert_eq!(*batch, 3000);
        let summary: Vec<(&str, &str, &str, u32)> = calls
            .iter()
            .map(|c| {
                (
                    c.pool.as_str(),
                    c.method.as_str(),
                    c.path_and_query.as_str(),
                    c.timeout_ms,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("users", "GET", "/users/7", 500),
                (
                    "billing",
                    "GET",
                    "/accounts/alice/balance?currency=EUR",
                    3000
                ),
                ("orders", "POST", "/orders/search?limit=5", 3000),
            ]
        );
        for call in calls {
            let headers: Vec<(&str, &str)> = call
                .headers
                .iter()
                .map(|h| (h.name.as_str(), h.value.as_str()))
                .collect();
            assert_eq!(headers, [("x-user-id", "u-1")]);
            assert!(call.body.is_empty());
        }
        assert!(answer.failed.is_empty());
        let resp = answer.response;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers().get("content-type").as_deref(),
            Some("application/json")
        );
        assert_eq!(resp.headers().get(PARTIAL_HEADER), None);
        assert_eq!(
            body_of(&resp),
            r#"{"profile":{"id": 7, "name": "Ann"},"balance":{"amount": 12.50},"orders":[1, 2]}"#,
            "in config order, each answer as it was written"
        );
    }

    #[test]
    fn failed_optional_parts_are_null_and_listed() {
        let sent = RefCell::new(Vec::new());
        let answer = dashboard().answer(
            &request(),
            fake(
                &sent,
                vec![
                    reply(200, r#"{"data": 1}"#),
                    Err(CallError::TimedOut),
                    reply(503, "{}"),
                ],
            ),
        );
        let resp = answer.response;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            json_of(&resp),
            json!({
                "profile": 1,
                "balance": null,
                "orders": null,
                "_failed": [
                    { "part": "balance", "reason": "timed out" },
                    { "part": "orders", "reason": "answered 503" },
                ],
            })
        );
        assert!(body_of(&resp).ends_with(r#""_failed":[{"part":"balance","reason":"timed out"},{"part":"orders","reason":"answered 503"}]}"#));
        assert_eq!(
            resp.headers().get(PARTIAL_HEADER).as_deref(),
            Some("balance,orders")
        );
        assert_eq!(answer.failed.len(), 2);
    }

    #[test]
    fn a_failed_required_part_makes_a_502_naming_the_first() {
        let agg = plugin(json!({ "parts": [
            { "name": "a", "pool": "p", "path": "/a", "required": false },
            { "name": "b", "pool": "p", "path": "/b" },
            { "name": "c", "pool": "p", "path": "/c" },
        ]}));
        let sent = RefCell::new(Vec::new());
        let answer = agg.answer(
            &request(),
            fake(
                &sent,
                vec![
                    Err(CallError::TimedOut),
                    Err(CallError::Unavailable("no healthy target".into())),
                    reply(200, "x"),
                ],
            ),
        );
        let resp = answer.response;
        assert_eq!(resp.status(), 502);
        assert_eq!(
            json_of(&resp),
            json!({ "error": {
                "status": 502,
                "code": "aggregate_part_failed",
                "message": "required part \"b\" failed: no healthy target",
                "request_id": "test-request",
            }})
        );
        assert_eq!(resp.headers().get(PARTIAL_HEADER), None);
        let reasons: Vec<&str> = answer.failed.iter().map(|f| f.reason.as_str()).collect();
        assert_eq!(
            reasons,
            ["timed out", "no healthy target", "the answer is not JSON"]
        );
    }

    #[test]
    fn a_missing_value_fails_its_part_without_a_call() {
        // Optional: the other parts are still sent.
        let sent = RefCell::new(Vec::new());
        let req = Request::new("GET", "/dashboard/7").with_param("id", "7");
        let answer = dashboard().answer(
            &req,
            fake(&sent, vec![reply(200, r#"{"data":"p"}"#), reply(200, "[]")]),
        );
        let paths: Vec<String> = sent.borrow()[0]
            .0
            .iter()
            .map(|c| c.path_and_query.clone())
            .collect();
        assert_eq!(paths, ["/users/7", "/orders/search?limit=5"]);
        assert_eq!(
            json_of(&answer.response),
            json!({
                "profile": "p",
                "balance": null,
                "orders": [],
                "_failed": [{ "part": "balance", "reason": "no value for {context.consumer}" }],
            })
        );
        // Required: nothing is sent.
        let sent = RefCell::new(Vec::new());
        let req = Request::new("GET", "/dashboard");
        let answer = dashboard().answer(&req, fake(&sent, Vec::new()));
        assert!(sent.borrow().is_empty());
        assert_eq!(answer.response.status(), 502);
        assert_eq!(
            json_of(&answer.response)["error"]["message"],
            "required part \"profile\" failed: no value for {id}"
        );
    }

    #[test]
    fn without_any_call_there_is_no_batch() {
        let agg = plugin(json!({ "parts": [
            { "name": "a", "pool": "p", "path": "/a?x={query.x}", "required": false },
        ]}));
        let sent = RefCell::new(Vec::new());
        let answer = agg.answer(&Request::new("GET", "/"), fake(&sent, Vec::new()));
        assert!(sent.borrow().is_empty());
        assert_eq!(
            body_of(&answer.response),
            r#"{"a":null,"_failed":[{"part":"a","reason":"no value for {query.x}"}]}"#
        );
    }

    #[test]
    fn a_missing_reply_is_a_failure_not_a_panic() {
        let agg = plugin(json!({ "parts": [
            { "name": "a", "pool": "p", "path": "/a" },
            { "name": "b", "pool": "p", "path": "/b", "required": false },
        ]}));
        let sent = RefCell::new(Vec::new());
        let answer = agg.answer(&request(), fake(&sent, vec![reply(200, "1")]));
        assert_eq!(
            body_of(&answer.response),
            r#"{"a":1,"b":null,"_failed":[{"part":"b","reason":"the gateway returned no answer for this call"}]}"#
        );
    }

    #[test]
    fn another_method_gets_a_405_naming_the_allowed_ones() {
        let agg = plugin(json!({
            "methods": ["GET", "HEAD"],
            "parts": [{ "name": "a", "pool": "p", "path": "/a" }],
        }));
        let sent = RefCell::new(Vec::new());
        let answer = agg.answer(&Request::new("POST", "/"), fake(&sent, Vec::new()));
        assert!(sent.borrow().is_empty());
        let resp = answer.response;
        assert_eq!(resp.status(), 405);
        assert_eq!(resp.headers().get("allow").as_deref(), Some("GET, HEAD"));
        assert_eq!(json_of(&resp)["error"]["code"], "method_not_allowed");
        assert_eq!(
            json_of(&resp)["error"]["message"],
            "POST is not allowed here: use GET, HEAD"
        );
        let head = agg.answer(
            &Request::new("HEAD", "/"),
            fake(&sent, vec![reply(200, "{}")]),
        );
        assert_eq!(head.response.status(), 200);
    }

    #[test]
    fn each_reply_becomes_a_value_or_a_reason() {
        let part = |pointer: Option<&str>| Part {
            name: "p".into(),
            pool: "pool".into(),
            method: "GET".into(),
            path: template::Template::try_from("/".to_string()).unwrap_or_else(|e| panic!("{e}")),
            required: true,
            timeout_ms: 1000,
            pointer: pointer
                .map(|p| json::Pointer::try_from(p.to_string()).unwrap_or_else(|e| panic!("{e}"))),
        };
        let whole = part(None);
        let data = part(Some("/data"));
        for (part, outcome, expected) in [
            (&whole, reply(200, " {\"a\":1} \n"), Ok("{\"a\":1}")),
            (&whole, reply(204, "null"), Ok("null")),
            (&whole, reply(299, "\"s\""), Ok("\"s\"")),
            (
                &data,
                reply(200, r#"{"data":[1,{"x":2}]}"#),
                Ok(r#"[1,{"x":2}]"#),
            ),
            (
                &data,
                reply(200, r#"{"other":1}"#),
                Err("no /data in the answer"),
            ),
            (&data, reply(200, "[1]"), Err("no /data in the answer")),
            (&whole, reply(200, ""), Err("the answer is not JSON")),
            (
                &whole,
                reply(200, "<html></html>"),
                Err("the answer is not JSON"),
            ),
            (&data, reply(200, "{"), Err("the answer is not JSON")),
            (&whole, reply(199, "{}"), Err("answered 199")),
            (&whole, reply(304, ""), Err("answered 304")),
            (&whole, reply(404, r#"{"error":"no"}"#), Err("answered 404")),
            (&whole, reply(503, "{}"), Err("answered 503")),
            (&whole, Err(CallError::TimedOut), Err("timed out")),
            (
                &whole,
                Err(CallError::TooLarge(1_048_576)),
                Err("the answer is over 1048576 bytes"),
            ),
            (
                &whole,
                Err(CallError::Unavailable("no healthy target".into())),
                Err("no healthy target"),
            ),
            (
                &whole,
                Err(CallError::BadCall("`G T` is not a method".into())),
                Err("`G T` is not a method"),
            ),
            (
                &whole,
                Err(CallError::NotGranted(
                    "pool \"x\" is not granted to this plugin".into(),
                )),
                Err("pool \"x\" is not granted to this plugin"),
            ),
        ] {
            let got = read_reply(part, outcome);
            assert_eq!(
                got.as_deref(),
                expected.map_err(|e| e.to_string()).as_deref()
            );
        }
    }

    fn lines(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_header_but_those_never_passed_goes_along_by_default() {
        let request = lines(&[
            ("host", "api.test"),
            ("user-agent", "curl"),
            ("accept", "application/json"),
            ("accept-encoding", "gzip"),
            ("authorization", "Bearer t"),
            ("x-user-id", "u-1"),
            ("x-consumer", "alice"),
            ("content-type", "application/json"),
            ("content-length", "2"),
            ("transfer-encoding", "chunked"),
            ("expect", "100-continue"),
            ("connection", "keep-alive, X-Hop"),
            ("keep-alive", "timeout=5"),
            ("x-hop", "1"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "close"),
            ("x-request-id", "r-1"),
            ("traceparent", "00-x"),
            ("tracestate", "a=b"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
        ]);
        assert_eq!(
            headers_to_pass(&PassHeaders::AllButNeverPassed, request),
            lines(&[
                ("user-agent", "curl"),
                ("accept", "application/json"),
                ("x-user-id", "u-1"),
                ("x-consumer", "alice"),
            ])
        );
        // Credentials go only where listed.
        let listed = PassHeaders::Only(vec!["authorization".into(), "cookie".into()]);
        let request = lines(&[("authorization", "Bearer t"), ("cookie", "a=1")]);
        assert_eq!(headers_to_pass(&listed, request.clone()), request);
    }

    #[test]
    fn a_list_passes_only_its_headers() {
        let request = lines(&[
            ("x-user-id", "u-1"),
            ("authorization", "Bearer t"),
            ("accept-language", "fr"),
            ("accept-language", "en"),
        ]);
        let only = PassHeaders::Only(vec!["accept-language".into(), "x-user-id".into()]);
        assert_eq!(
            headers_to_pass(&only, request.clone()),
            lines(&[
                ("x-user-id", "u-1"),
                ("accept-language", "fr"),
                ("accept-language", "en"),
            ])
        );
        assert!(headers_to_pass(&PassHeaders::Only(Vec::new()), request).is_empty());
    }

    #[test]
    fn part_names_and_reasons_are_json_escaped_safely() {
        // Names are plain by config; reasons may carry request values.
        let agg = plugin(json!({ "parts": [
            { "name": "a-1_B", "pool": "p", "path": "/a", "required": false },
        ]}));
        let answer = agg.merge(&request(), vec![Err("no value for {query.\"x\\}".into())]);
        assert_eq!(
            json_of(&answer.response),
            json!({ "a-1_B": null, "_failed": [{ "part": "a-1_B", "reason": "no value for {query.\"x\\}" }] })
        );
    }
}
