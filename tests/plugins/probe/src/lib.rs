//! A plugin for tests, good or hostile as its config says:
//!
//! - `tag: NAME` appends NAME to `x-chain` on the request and to
//!   `x-chain-response` on the response, so tests can see hook order;
//! - `respond: STATUS` answers the request itself;
//! - `refuse: MESSAGE` refuses its config;
//! - `fail_on: request | response` with `how: trap | loop | grow | sleep |
//!   bad_header | wrong_hook | flood` misbehaves in that hook: panics (a
//!   trap), spins forever, allocates without bound, sleeps (waits on WASI),
//!   sets a header the name of which is not valid HTTP, calls an import the
//!   hook may not (the response's status from the request hook, a change to
//!   the request's path from the response hook), adds 40,000 headers, or
//!   (`fill_context`) sets 100 context values;
//! - `respond_headers: N` puts N headers in the `respond` answer;
//! - `fail_when_header: NAME` misbehaves only for requests carrying NAME;
//! - `bodies: true` asks for bodies and reports their sizes in headers;
//! - `log: MESSAGE` writes MESSAGE to the gateway's log on every request;
//! - `report_sandbox: true` tries the environment, files and the clocks, and
//!   reports what it could reach in `x-sandbox-*` headers (the network is
//!   the `sockets` fixture's: a plugin importing sockets does not load);
//! - `remember_header: NAME` keeps the request's header NAME in the
//!   request's context under key NAME;
//! - `recall: KEY` copies context value KEY into request header
//!   `x-recalled-KEY` and into response header `x-recalled-KEY` (`none`
//!   when unset);
//! - `echo_request_header: NAME` copies the request's header NAME, as sent
//!   upstream, into response header `x-request-NAME` (`none` when absent);
//! - `spin_from_header: true` spins for as many iterations as request header
//!   `x-spin-iterations` says and reports the wall time it took in request
//!   header `x-spun-us`;
//! - `report_tls: true` describes the request's TLS session in request
//!   header `x-tls` (`none` over plain HTTP).
//!
//! With an empty config it does nothing at all (the no-op plugin of benchmarks).

use plugin_sdk::prelude::*;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    tag: Option<String>,
    respond: Option<u16>,
    #[serde(default)]
    respond_headers: usize,
    refuse: Option<String>,
    fail_on: Option<String>,
    how: Option<String>,
    fail_when_header: Option<String>,
    #[serde(default)]
    bodies: bool,
    log: Option<String>,
    #[serde(default)]
    report_sandbox: bool,
    remember_header: Option<String>,
    recall: Option<String>,
    echo_request_header: Option<String>,
    #[serde(default)]
    spin_from_header: bool,
    #[serde(default)]
    report_tls: bool,
    #[serde(default)]
    not_implemented: bool,
    #[serde(default)]
    count_calls: bool,
}

std::thread_local! {
    /// Request hooks this instance has run (each instance has its own memory).
    static CALLS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

struct Probe {
    cfg: Config,
}

impl Plugin for Probe {
    type Config = Config;

    fn new(cfg: Config) -> Result<Self, String> {
        if let Some(message) = &cfg.refuse {
            return Err(message.clone());
        }
        Ok(Self { cfg })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            request_body: self.cfg.bodies,
            response_body: self.cfg.bodies,
        }
    }

    fn on_request(&self, request: &mut Request) -> Action {
        if self.cfg.not_implemented {
            plugin_sdk::__runtime::default_hook_ran();
            return Action::Continue;
        }
        if self.cfg.count_calls {
            let calls = CALLS.with(|c| {
                c.set(c.get() + 1);
                c.get()
            });
            request
                .headers_mut()
                .insert("x-instance-calls", &calls.to_string());
        }
        let triggered = self
            .cfg
            .fail_when_header
            .as_deref()
            .is_none_or(|h| request.headers().contains(h));
        if let Some(message) = &self.cfg.log {
            log::info(message);
        }
        if self.cfg.fail_on.as_deref() == Some("request") && triggered {
            match self.cfg.how.as_deref() {
                Some("bad_header") => request.headers_mut().insert("bad name", "x"),
                Some("flood") => flood(request.headers()),
                Some("fill_context") => {
                    for i in 0..100 {
                        request.context().set(&format!("key-{i}"), "v");
                    }
                }
                Some("wrong_hook") => {
                    plugin_sdk::bindings::gateway::plugin::response::status();
                }
                how => misbehave(how),
            }
        }
        if let Some(tag) = &self.cfg.tag {
            append_tag(request.headers_mut(), "x-chain", tag);
        }
        if self.cfg.report_tls {
            let described = request.tls().map_or("none".to_string(), |tls| {
                format!(
                    "{} sni={} alpn={}",
                    tls.version,
                    tls.server_name.as_deref().unwrap_or("-"),
                    tls.alpn.as_deref().unwrap_or("-")
                )
            });
            request.headers_mut().insert("x-tls", &described);
        }
        if let Some(name) = &self.cfg.remember_header
            && let Some(value) = request.headers().get(name)
        {
            request.context().set(name, &value);
        }
        if let Some(key) = &self.cfg.recall {
            let value = request.context().get(key).unwrap_or_else(|| "none".into());
            request
                .headers()
                .insert(&format!("x-recalled-{key}"), &value);
        }
        if self.cfg.spin_from_header {
            spin(request);
        }
        if self.cfg.report_sandbox {
            report_sandbox(request);
        }
        if self.cfg.bodies {
            let size = request.body().map_or(0, |b| b.len());
            request
                .headers_mut()
                .insert("x-request-body-bytes", &size.to_string());
        }
        match self.cfg.respond {
            Some(status) => {
                let answer = Response::text(status, "answered by the probe plugin")
                    .with_header("x-answered-by", self.cfg.tag.as_deref().unwrap_or("probe"));
                for i in 0..self.cfg.respond_headers {
                    answer.headers().append(&format!("x-answer-{i}"), "v");
                }
                Action::Respond(answer)
            }
            None => Action::Continue,
        }
    }

    fn on_response(&self, response: &mut Response) {
        if self.cfg.fail_on.as_deref() == Some("response") {
            match self.cfg.how.as_deref() {
                Some("bad_header") => response.headers_mut().insert("x-ok", "bad\nvalue"),
                Some("flood") => flood(response.headers()),
                Some("wrong_hook") => {
                    plugin_sdk::bindings::gateway::plugin::request::set_path("/changed");
                }
                how => misbehave(how),
            }
        }
        if let Some(tag) = &self.cfg.tag {
            append_tag(response.headers_mut(), "x-chain-response", tag);
        }
        if let Some(key) = &self.cfg.recall {
            let value = response.context().get(key).unwrap_or_else(|| "none".into());
            response
                .headers()
                .insert(&format!("x-recalled-{key}"), &value);
        }
        if let Some(name) = &self.cfg.echo_request_header {
            let value = response
                .request()
                .header(name)
                .unwrap_or_else(|| "none".into());
            response
                .headers()
                .insert(&format!("x-request-{name}"), &value);
        }
        if self.cfg.bodies {
            let size = response.body().map_or(0, |b| b.len());
            response
                .headers_mut()
                .insert("x-response-body-bytes", &size.to_string());
        }
    }
}

/// Adds 40,000 distinct headers (the host's header map holds at most 32,768).
fn flood(headers: &Headers) {
    for i in 0..40_000 {
        headers.append(&format!("x-flood-{i}"), "v");
    }
}

/// Adds `tag` to the comma-separated list in header `name`.
fn append_tag(headers: &Headers, name: &str, tag: &str) {
    let chain = match headers.get(name) {
        Some(before) => format!("{before},{tag}"),
        None => tag.to_string(),
    };
    headers.insert(name, &chain);
}

/// What the WASI sandbox lets a plugin see, as request headers.
fn report_sandbox(request: &mut Request) {
    let env = std::env::vars().count();
    let files = std::fs::read_dir("/").is_ok() || std::fs::read("/etc/hostname").is_ok();
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let started = std::time::Instant::now();
    std::hint::black_box(spin_for(100_000));
    let monotonic_moves = started.elapsed() > std::time::Duration::ZERO;
    let headers = request.headers();
    headers.insert("x-sandbox-env-vars", &env.to_string());
    headers.insert("x-sandbox-files", &files.to_string());
    headers.insert("x-sandbox-clock-secs", &clock.to_string());
    headers.insert("x-sandbox-monotonic-moves", &monotonic_moves.to_string());
}

/// Spins as request header `x-spin-iterations` says; reports the wall time.
fn spin(request: &mut Request) {
    let iterations = request
        .headers()
        .get("x-spin-iterations")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let started = std::time::Instant::now();
    std::hint::black_box(spin_for(iterations));
    let spun = started.elapsed().as_micros();
    request.headers().insert("x-spun-us", &spun.to_string());
}

fn spin_for(iterations: u64) -> u64 {
    let mut n: u64 = 0;
    for i in 0..iterations {
        n = std::hint::black_box(n.wrapping_mul(31).wrapping_add(i));
    }
    n
}

fn misbehave(how: Option<&str>) {
    match how {
        Some("loop") => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        Some("grow") => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        Some("sleep") => std::thread::sleep(std::time::Duration::from_millis(50)),
        _ => panic!("the probe plugin was told to trap"),
    }
}

export_plugin!(Probe);
