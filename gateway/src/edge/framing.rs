//! Follows the request framing of an HTTP/1 connection as hyper reads it,
//! to catch what hyper accepts but a backend could read differently: a
//! request with both `Content-Length` and `Transfer-Encoding`. hyper drops
//! the length and reads chunks, as RFC 9112 allows; the gateway refuses it
//! with 400, as nginx and Envoy do, since it is the shape of a smuggling
//! attempt.
//!
//! The scanner only reads; when it loses the thread (an upgrade, a line too
//! long, bytes it cannot parse) it stops and leaves the bytes to hyper,
//! which refuses what is malformed itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::observed::{Observed, Observer};

/// What the scanner found, shared with the connection's request handler.
#[derive(Debug)]
pub struct Findings {
    /// Index (0-based, in arrival order) of the first request whose head had
    /// both framing headers; `u64::MAX` while there is none.
    ambiguous_from: AtomicU64,
    /// Requests handed to the proxy on this connection so far.
    requests: AtomicU64,
    /// The scanner lost the thread: later requests on the connection would
    /// go unchecked, so the connection ends after the current answer.
    lost: AtomicBool,
    /// Every request read so far was whole, body included, and nothing of
    /// a next one has come: the connection is between requests.
    between: AtomicBool,
}

impl Default for Findings {
    fn default() -> Self {
        Self {
            ambiguous_from: AtomicU64::new(u64::MAX),
            requests: AtomicU64::new(0),
            lost: AtomicBool::new(false),
            between: AtomicBool::new(true),
        }
    }
}

impl Findings {
    /// Called once per request, in order: whether this request's framing
    /// was ambiguous. hyper hands a request over only after reading its whole
    /// head, which the scanner has seen by then.
    pub fn next_request_is_ambiguous(&self) -> bool {
        let index = self.requests.fetch_add(1, Ordering::Relaxed);
        index >= self.ambiguous_from.load(Ordering::Relaxed)
    }

    /// Whether the connection must close after the current answer, since
    /// what follows could not be checked.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Whether the client has sent whole requests only (bodies included)
    /// and nothing of a next one, as far as the scanner follows them.
    pub fn between_requests(&self) -> bool {
        self.between.load(Ordering::Relaxed) && !self.lost()
    }
}

/// `io` with its inbound bytes passing through a new scanner, and what the
/// scanner will find.
pub fn watch<IO>(io: IO, max_head_bytes: usize) -> (Observed<IO, Scanner>, Arc<Findings>) {
    let findings = Arc::new(Findings::default());
    let scanner = Scanner::new(findings.clone(), max_head_bytes);
    (Observed::new(io, scanner), findings)
}

impl Observer for Scanner {
    fn saw(&mut self, bytes: &[u8]) {
        self.feed(bytes);
    }
}

/// Longest chunk-size or trailer line followed; hyper refuses far less.
const MAX_LINE: usize = 4096;

#[derive(Debug)]
enum State {
    /// Reading a request head; `line` holds its unfinished last line.
    Head,
    /// Skipping this many body bytes (`Content-Length`).
    Body(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// Skipping a chunk's data and its CRLF.
    ChunkData(u64),
    /// Reading trailer lines after the last chunk.
    Trailers,
    /// Lost the thread, or nothing more to learn: bytes pass unread.
    Off,
}

/// Follows one connection's request framing.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    /// The current line when it spans reads.
    line: Vec<u8>,
    /// The head read so far: its size, and the framing headers it had.
    head_bytes: usize,
    head: HeadFacts,
    heads: u64,
    max_head_bytes: usize,
    findings: Arc<Findings>,
}

#[derive(Debug, Default)]
struct HeadFacts {
    started: bool,
    content_length: Option<u64>,
    bad_length: bool,
    transfer_encoding: bool,
    chunked: bool,
    stop_after: bool,
}

impl Scanner {
    fn new(findings: Arc<Findings>, max_head_bytes: usize) -> Self {
        Self {
            state: State::Head,
            line: Vec::new(),
            head_bytes: 0,
            head: HeadFacts::default(),
            heads: 0,
            max_head_bytes,
            findings,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.follow(bytes);
        let between =
            matches!(self.state, State::Head) && !self.head.started && self.line.is_empty();
        self.findings.between.store(between, Ordering::Relaxed);
    }

    fn follow(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.state {
                State::Off => return,
                State::Body(left) | State::ChunkData(left) => {
                    let take = left.min(bytes.len() as u64);
                    bytes = &bytes[take as usize..];
                    let left = left - take;
                    if left == 0 {
                        self.state = match self.state {
                            State::ChunkData(_) => State::ChunkSize,
                            _ => State::Head,
                        };
                    } else if let State::Body(l) | State::ChunkData(l) = &mut self.state {
                        *l = left;
                    }
                }
                State::Head | State::ChunkSize | State::Trailers => {
                    let Some(end) = bytes.iter().position(|&b| b == b'\n') else {
                        self.keep_partial(bytes);
                        return;
                    };
                    let (piece, rest) = bytes.split_at(end + 1);
                    bytes = rest;
                    if self.line.is_empty() {
                        self.on_line(piece);
                    } else {
                        let mut line = std::mem::take(&mut self.line);
                        line.extend_from_slice(piece);
                        if line.len() > MAX_LINE.max(self.max_head_bytes) {
                            self.lose();
                            return;
                        }
                        self.on_line(&line);
                        line.clear();
                        if self.line.is_empty() {
                            self.line = line;
                        }
                    }
                }
            }
        }
    }

    fn keep_partial(&mut self, bytes: &[u8]) {
        self.line.extend_from_slice(bytes);
        if self.line.len() > MAX_LINE.max(self.max_head_bytes) {
            self.lose();
        }
    }

    /// Stops scanning; the connection ends after the current answer.
    fn lose(&mut self) {
        self.state = State::Off;
        self.line = Vec::new();
        self.findings.lost.store(true, Ordering::Relaxed);
    }

    /// One whole line, its `\n` included.
    fn on_line(&mut self, line: &[u8]) {
        let text = trim_line_end(line);
        match self.state {
            State::Head => self.on_head_line(line.len(), text),
            // hyper reads chunk lines and trailers ending in CRLF only.
            State::ChunkSize | State::Trailers if !line.ends_with(b"\r\n") => self.lose(),
            State::ChunkSize => match chunk_size(text) {
                State::Off => self.lose(),
                next => self.state = next,
            },
            State::Trailers if text.is_empty() => self.state = State::Head,
            _ => {}
        }
    }

    fn on_head_line(&mut self, raw_len: usize, text: &[u8]) {
        self.head_bytes += raw_len;
        if self.head_bytes > self.max_head_bytes {
            self.lose();
            return;
        }
        if !self.head.started {
            // Blank lines before a request line are skipped, as hyper does.
            if !text.is_empty() {
                self.head.started = true;
                // A tunnel, or HTTP/2's preface: what follows is not HTTP/1.
                self.head.stop_after =
                    text.starts_with(b"CONNECT ") || text.starts_with(b"PRI * HTTP/2");
            }
            return;
        }
        if !text.is_empty() {
            self.on_header(text);
            return;
        }
        // The blank line: the head is complete.
        let head = std::mem::take(&mut self.head);
        self.head_bytes = 0;
        let index = self.heads;
        self.heads += 1;
        if head.transfer_encoding && (head.content_length.is_some() || head.bad_length) {
            self.findings
                .ambiguous_from
                .fetch_min(index, Ordering::Relaxed);
            self.lose();
            return;
        }
        if head.stop_after || head.bad_length || (head.transfer_encoding && !head.chunked) {
            self.lose();
            return;
        }
        self.state = if head.transfer_encoding {
            State::ChunkSize
        } else {
            match head.content_length {
                Some(0) | None => State::Head,
                Some(length) => State::Body(length),
            }
        };
    }

    fn on_header(&mut self, line: &[u8]) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return;
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            match parse_decimal(value) {
                Some(length) if self.head.content_length.is_none_or(|l| l == length) => {
                    self.head.content_length = Some(length);
                }
                _ => self.head.bad_length = true,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.head.transfer_encoding = true;
            let last = value.rsplit(|&b| b == b',').next().map(trim);
            self.head.chunked = last.is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            // After an upgrade the bytes may be another protocol.
            self.head.stop_after = true;
        }
    }
}

fn chunk_size(line: &[u8]) -> State {
    let digits = line
        .iter()
        .position(|&b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits == 0 {
        return State::Off;
    }
    // u64 parsing takes any number of leading zeros and refuses overflow.
    let Some(size) = std::str::from_utf8(&line[..digits])
        .ok()
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
    else {
        return State::Off;
    };
    match size {
        0 => State::Trailers,
        size => size.checked_add(2).map_or(State::Off, State::ChunkData),
    }
}

fn parse_decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` split at every `step` bytes; the indexes of requests
    /// found ambiguous.
    fn ambiguous(input: &str, step: usize) -> Option<u64> {
        let findings = Arc::new(Findings::default());
        let mut scanner = Scanner::new(findings.clone(), 64 * 1024);
        for piece in input.as_bytes().chunks(step) {
            scanner.feed(piece);
        }
        let first = findings.ambiguous_from.load(Ordering::Relaxed);
        (first != u64::MAX).then_some(first)
    }

    fn each_split(input: &str) -> Vec<Option<u64>> {
        [1, 2, 3, 7, 64, 100_000]
            .iter()
            .map(|&step| ambiguous(input, step))
            .collect()
    }

    #[test]
    fn both_framing_headers_are_found_in_either_order() {
        for request in [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n",
            "POST / HTTP/1.1\nHost: a\nTRANSFER-ENCODING: gzip\nContent-Length: x\n\n",
        ] {
            assert!(
                each_split(request).iter().all(|f| *f == Some(0)),
                "{request:?}"
            );
        }
    }

    #[test]
    fn bodies_are_followed_so_later_heads_are_read_as_heads() {
        // The second "head" is the first request's body: not a request.
        let sized = "POST / HTTP/1.1\r\nContent-Length: 65\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        assert!(each_split(sized).iter().all(Option::is_none));
        let chunked = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nx-sum: 1\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(
            each_split(chunked).iter().all(|f| *f == Some(2)),
            "{:?}",
            each_split(chunked)
        );
        let body_looks_like_head = "POST / HTTP/1.1\r\nContent-Length: 49\r\n\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert!(each_split(body_looks_like_head).iter().all(Option::is_none));
    }

    #[test]
    fn upgrades_and_garbage_stop_the_scan() {
        let upgrade = "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(each_split(upgrade).iter().all(Option::is_none));
        let bad_chunk = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(each_split(bad_chunk).iter().all(Option::is_none));
    }

    #[test]
    fn what_hyper_reads_differently_ends_the_scan_and_the_connection() {
        for input in [
            // A bare LF where hyper wants CRLF in a chunked body.
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n",
            // An upgrade that may or may not be accepted.
            "GET / HTTP/1.1\r\nUpgrade: x\r\n\r\n",
        ] {
            let findings = Arc::new(Findings::default());
            let mut scanner = Scanner::new(findings.clone(), 64 * 1024);
            scanner.feed(input.as_bytes());
            assert!(findings.lost(), "{input:?}");
        }
        let findings = Arc::new(Findings::default());
        let mut scanner = Scanner::new(findings.clone(), 64 * 1024);
        scanner.feed(b"POST / HTTP/1.1\r\nContent-Length: 000000000000000000000005\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n");
        scanner.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000000005\r\nhello\r\n0\r\n\r\n");
        assert!(
            !findings.lost(),
            "leading zeros are read as hyper reads them"
        );
    }

    #[test]
    fn requests_are_counted_in_order() {
        let findings = Findings::default();
        findings.ambiguous_from.store(1, Ordering::Relaxed);
        assert!(!findings.next_request_is_ambiguous());
        assert!(findings.next_request_is_ambiguous());
        assert!(findings.next_request_is_ambiguous());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// What the scanner concludes from `input` fed in pieces of these sizes.
        fn verdict(input: &[u8], cuts: &[usize]) -> (u64, bool) {
            let findings = Arc::new(Findings::default());
            let mut scanner = Scanner::new(findings.clone(), 4096);
            let mut rest = input;
            for &cut in cuts.iter().cycle().take(input.len() + 1) {
                if rest.is_empty() {
                    break;
                }
                let (piece, after) = rest.split_at(cut.clamp(1, rest.len()));
                scanner.feed(piece);
                rest = after;
            }
            (
                findings.ambiguous_from.load(Ordering::Relaxed),
                findings.lost(),
            )
        }

        fn requests() -> impl Strategy<Value = Vec<u8>> {
            let line = prop_oneof![
                Just("POST / HTTP/1.1\r\n"),
                Just("GET / HTTP/1.1\r\n"),
                Just("Content-Length: 3\r\n"),
                Just("Content-Length: 0\r\n"),
                Just("Transfer-Encoding: chunked\r\n"),
                Just("Host: a\r\n"),
                Just("\r\n"),
                Just("\n"),
                Just("abc"),
                Just("3\r\nabc\r\n"),
                Just("0\r\n\r\n"),
                Just("Upgrade: x\r\n"),
                Just("zz\r\n"),
            ];
            proptest::collection::vec(line, 0..40).prop_map(|parts| parts.concat().into_bytes())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn how_bytes_arrive_does_not_change_the_verdict(
                input in requests(),
                cuts in proptest::collection::vec(1usize..9, 1..6),
            ) {
                prop_assert_eq!(verdict(&input, &cuts), verdict(&input, &[input.len().max(1)]));
            }

            #[test]
            fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..4096)) {
                let _ = verdict(&input, &[7, 1, 300]);
            }
        }
    }
}
