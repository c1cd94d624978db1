//! The record of reload attempts (startup included) that `GET
//! /admin/reloads` shows: when, what triggered it, and how it ended; and
//! the way `POST /admin/reload` asks the reloader for one.

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// Reload attempts kept for `GET /admin/reloads`.
const KEPT_RECORDS: usize = 100;

/// One reload attempt and how it ended.
#[derive(Debug, Clone)]
pub struct ReloadRecord {
    pub at: SystemTime,
    /// `startup`, `SIGHUP`, or `file change: PATH`.
    pub trigger: String,
    pub ok: bool,
    /// Why it failed: the file and the cause.
    pub error: Option<String>,
    pub warnings: Vec<String>,
    pub duration: Duration,
}

/// Asks for a reload; the answer is its record.
pub type ReloadRequest = tokio::sync::oneshot::Sender<ReloadRecord>;

/// Recent reload attempts, newest last, and where reload requests go.
#[derive(Debug, Default)]
pub struct ReloadLog {
    inner: Mutex<(VecDeque<ReloadRecord>, u64)>,
    /// Set by the reloader (`reload::spawn`) once it runs.
    requests: OnceLock<tokio::sync::mpsc::UnboundedSender<ReloadRequest>>,
}

impl ReloadLog {
    /// Where the reloader takes requests from.
    pub fn take_requests_from(&self, sender: tokio::sync::mpsc::UnboundedSender<ReloadRequest>) {
        let _ = self.requests.set(sender);
    }

    /// Asks the reloader for a reload now; `None` when no reloader runs
    /// (a gateway used as a library without `reload::spawn`).
    pub fn request(&self) -> Option<tokio::sync::oneshot::Receiver<ReloadRecord>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.requests.get()?.send(reply).ok()?;
        Some(answer)
    }

    /// Keeps the record of one attempt, and returns it.
    pub fn record(
        &self,
        trigger: &str,
        started: Instant,
        result: Result<Vec<String>, String>,
    ) -> ReloadRecord {
        let (ok, error, warnings) = match result {
            Ok(warnings) => (true, None, warnings),
            Err(error) => (false, Some(error), Vec::new()),
        };
        let record = ReloadRecord {
            at: SystemTime::now(),
            trigger: trigger.to_string(),
            ok,
            error,
            warnings,
            duration: started.elapsed(),
        };
        if let Ok(mut inner) = self.inner.lock() {
            if inner.0.len() == KEPT_RECORDS {
                inner.0.pop_front();
            }
            inner.0.push_back(record.clone());
            inner.1 += 1;
        }
        record
    }

    /// (records newest first, attempts since start).
    pub fn recent(&self) -> (Vec<ReloadRecord>, u64) {
        match self.inner.lock() {
            Ok(inner) => (inner.0.iter().rev().cloned().collect(), inner.1),
            Err(_) => (Vec::new(), 0),
        }
    }
}
