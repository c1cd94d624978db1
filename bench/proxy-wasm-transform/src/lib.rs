//! What bench/gateway-transform.yaml asks of the gateway's transform plugin,
//! as an Envoy proxy-wasm filter: on the request, set `x-gateway`, remove
//! `x-internal` and add `src=gw` to the query; on the response, set
//! `x-served-by`.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(Transform) });
}}

struct Transform;

impl Context for Transform {}

impl HttpContext for Transform {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        self.set_http_request_header("x-gateway", Some("bench"));
        self.set_http_request_header("x-internal", None);
        if let Some(path) = self.get_http_request_header(":path") {
            let separator = if path.contains('?') { '&' } else { '?' };
            self.set_http_request_header(":path", Some(&format!("{path}{separator}src=gw")));
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        self.set_http_response_header("x-served-by", Some("envoy"));
        Action::Continue
    }
}
