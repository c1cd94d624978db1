//! The access log (`access_log:`): one line per request, JSON or text,
//! written through `tracing` under target `access` by a thread of its own
//! (a slow disk never holds a request). A line is written when the answer's
//! body has been sent, or the client left before it was.

use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tracing_subscriber::Layer;

use crate::config::access_log::{AccessLogConfig, LogFormat};

/// The `tracing` target access lines are written under.
pub const TARGET: &str = "access";

/// What is known of one logged request as it goes.
#[derive(Debug)]
pub struct Entry {
    pub started: Instant,
    pub request_id: String,
    pub trace_id: String,
    pub client: IpAddr,
    pub method: String,
    pub path: String,
    pub route: Option<String>,
    pub upstream: Option<Arc<str>>,
    /// The target URL that answered.
    pub target: Option<String>,
    pub status: u16,
    /// Request body bytes read from the client.
    pub bytes_in: Arc<AtomicU64>,
    /// From sending upstream to the answer's head (retries included).
    pub upstream_time: Option<Duration>,
    /// Time in the route's plugin hooks (waits on host services included).
    pub plugins_time: Duration,
    /// The line has been written (by `Logged`, or by `Drop` for a request
    /// whose client left before its answer's head).
    written: bool,
}

impl Drop for Entry {
    fn drop(&mut self) {
        if !self.written {
            // The client left before the answer's head: nginx's 499.
            if self.status == 0 {
                self.status = 499;
            }
            self.write(0, false);
        }
    }
}

/// Longest path written (a client's path may be as long as its whole head).
pub const MAX_PATH: usize = 2048;

/// Lines waiting for the writer thread at most; past it lines are dropped
/// rather than held (a stalled disk must not grow the gateway's memory).
const MAX_QUEUED_LINES: usize = 8192;

/// `text` cut to at most `max` bytes, at a character boundary.
pub fn shortened(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Carries the counter of request body bytes from `proxy::handle` to where
/// the body is read (`edge::admit`), as a request extension.
#[derive(Debug, Clone)]
pub struct BytesIn(pub Arc<AtomicU64>);

impl Entry {
    pub fn start(started: Instant, client: IpAddr, method: &str, path: &str) -> Self {
        Self {
            started,
            request_id: String::new(),
            trace_id: String::new(),
            client,
            method: method.to_string(),
            path: shortened(path, MAX_PATH).to_string(),
            route: None,
            upstream: None,
            target: None,
            status: 0,
            bytes_in: Arc::default(),
            upstream_time: None,
            plugins_time: Duration::ZERO,
            written: false,
        }
    }

    fn write(&mut self, bytes_out: u64, completed: bool) {
        self.written = true;
        // Milliseconds to the microsecond: more digits are float noise.
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        tracing::info!(
            target: TARGET,
            request_id = %self.request_id,
            trace_id = %self.trace_id,
            client = %self.client,
            method = %self.method,
            path = %self.path,
            route = %self.route.as_deref().unwrap_or(""),
            upstream = %self.upstream.as_deref().unwrap_or(""),
            target = %self.target.as_deref().unwrap_or(""),
            status = self.status,
            bytes_in = self.bytes_in.load(Ordering::Relaxed),
            bytes_out,
            total_ms = ms(self.started.elapsed()),
            upstream_ms = self.upstream_time.map(ms),
            plugins_ms = ms(self.plugins_time),
            completed,
        );
    }
}

/// An answer's body that counts what it sends and writes the request's
/// line when it is done with (sent whole, or dropped by a client leaving).
#[derive(Debug)]
pub struct Logged<B> {
    body: B,
    entry: Option<Box<Entry>>,
    bytes_out: u64,
    ended: bool,
}

impl<B> Logged<B> {
    /// `bodiless`: the answer has no body whatever `body` holds (a HEAD
    /// request's, a 204 or 304), so it is complete once its head is sent.
    pub fn new(body: B, entry: Box<Entry>, bodiless: bool) -> Self
    where
        B: http_body::Body,
    {
        let mut logged = Self {
            body,
            entry: Some(entry),
            bytes_out: 0,
            ended: bodiless,
        };
        logged.check_end();
        logged
    }
}

impl<B> Drop for Logged<B> {
    fn drop(&mut self) {
        // (A body with nothing to send is never polled: see `new`.)
        if let Some(mut entry) = self.entry.take() {
            entry.write(self.bytes_out, self.ended);
        }
    }
}

impl<B: http_body::Body> Logged<B> {
    /// Sent whole: hyper stops polling a body that says it has ended.
    fn check_end(&mut self) {
        if self.body.is_end_stream() {
            self.ended = true;
        }
    }
}

impl<B> http_body::Body for Logged<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes_out += data.len() as u64;
                }
                this.check_end();
            }
            Poll::Ready(None) => this.ended = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// One `name=value` of a text line; a value a client could have shaped to
/// look like more fields or to mislead a terminal (spaces, quotes, `=`,
/// control or non-ASCII characters) is quoted, escaped as Rust would.
fn text_field(
    writer: &mut tracing_subscriber::fmt::format::Writer<'_>,
    field: &tracing::field::Field,
    value: &dyn std::fmt::Debug,
) -> std::fmt::Result {
    let text = format!("{value:?}");
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '=');
    if plain {
        return write!(writer, "{}={text}", field.name());
    }
    write!(writer, "{}=\"", field.name())?;
    for c in text.chars() {
        match c {
            '"' => writer.write_str("\\\"")?,
            '\\' => writer.write_str("\\\\")?,
            ' ' => writer.write_char(' ')?,
            c if c.is_ascii_graphic() => writer.write_char(c)?,
            c => write!(writer, "{}", c.escape_unicode())?,
        }
    }
    writer.write_char('"')
}

/// The layer writing access lines to `config.to` (relative to `base`), and
/// the guard that flushes it when dropped (at exit).
pub fn layer<S>(
    config: &AccessLogConfig,
    base: &Path,
) -> std::io::Result<(
    Box<dyn Layer<S> + Send + Sync>,
    tracing_appender::non_blocking::WorkerGuard,
)>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let queue = || {
        tracing_appender::non_blocking::NonBlockingBuilder::default()
            .buffered_lines_limit(MAX_QUEUED_LINES)
            .lossy(true)
    };
    let (writer, guard) = if config.to == "stdout" {
        queue().finish(std::io::stdout())
    } else {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(base.join(&config.to))?;
        queue().finish(file)
    };
    use tracing_subscriber::field::MakeExt as _;
    let only_access = tracing_subscriber::filter::filter_fn(|meta| meta.target() == TARGET);
    let layer = match config.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_target(false)
            .with_writer(writer)
            .with_filter(only_access)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .compact()
            .fmt_fields(tracing_subscriber::fmt::format::debug_fn(text_field).delimited(" "))
            .with_ansi(false)
            .with_target(false)
            .with_level(false)
            .with_writer(writer)
            .with_filter(only_access)
            .boxed(),
    };
    Ok((layer, guard))
}
