//! The record of reload attempts (startup included) that `GET
//! /admin/reloads` shows: when, what triggered it, and how it ended.

use std::collections::VecDeque;
use std::sync::Mutex;
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

/// Recent reload attempts, newest last.
#[derive(Debug, Default)]
pub struct ReloadLog {
    inner: Mutex<(VecDeque<ReloadRecord>, u64)>,
}

impl ReloadLog {
    pub fn record(&self, trigger: &str, started: Instant, result: Result<Vec<String>, String>) {
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
            inner.0.push_back(record);
            inner.1 += 1;
        }
    }

    /// (records newest first, attempts since start).
    pub fn recent(&self) -> (Vec<ReloadRecord>, u64) {
        match self.inner.lock() {
            Ok(inner) => (inner.0.iter().rev().cloned().collect(), inner.1),
            Err(_) => (Vec::new(), 0),
        }
    }
}
