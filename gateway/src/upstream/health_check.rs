//! Active health checks: GET a path on every target at an interval and flip
//! it up or down after enough results in a row.

use std::sync::{Arc, Weak};

use http::{Request, StatusCode};

use super::Upstream;
use crate::balance::health::Thresholds;

/// Starts checking `upstream`'s targets if it has a `health_check`. The task
/// ends by itself once the upstream is dropped (a config without it).
pub fn spawn_health_checks(upstream: &Arc<Upstream>) {
    let Some(config) = upstream.health_check.clone() else {
        return;
    };
    if !upstream.claim_health_checks() {
        return;
    }
    let weak: Weak<Upstream> = Arc::downgrade(upstream);
    let targets = upstream.pool.targets().len();
    tokio::spawn(async move {
        let mut thresholds: Vec<Thresholds> = (0..targets).map(|_| Thresholds::default()).collect();
        let mut ticker = tokio::time::interval(config.interval.0);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(upstream) = weak.upgrade() else {
                return;
            };
            let probes = (0..targets).map(|i| probe(&upstream, i, &config.path, config.timeout.0));
            let results = futures_util::future::join_all(probes).await;
            for (i, ok) in results.into_iter().enumerate() {
                let health = &upstream.pool.targets()[i].health;
                let up = health.is_active_up();
                if let Some(now_up) =
                    thresholds[i].observe(ok, up, config.healthy_after, config.unhealthy_after)
                {
                    health.set_active(now_up);
                    let target = &upstream.pool.targets()[i].authority;
                    if now_up {
                        tracing::info!(upstream = %upstream.name, %target, "target is healthy again");
                    } else {
                        tracing::warn!(upstream = %upstream.name, %target, "target failed its health checks; ejected");
                    }
                }
            }
        }
    });
}

/// One GET; healthy means a 2xx or 3xx answer within the timeout.
async fn probe(
    upstream: &Upstream,
    target: usize,
    path: &str,
    timeout: std::time::Duration,
) -> bool {
    let Ok(request) = Request::get(path)
        .header(http::header::USER_AGENT, "gateway-health-check")
        .body(crate::body::empty())
    else {
        return false;
    };
    let answer = async {
        let response = upstream.probe(target, request).await.ok()?;
        let status = response.status();
        // Read the (small) body so the connection can serve the next check.
        let body = http_body_util::Either::Left(crate::body::Streamed::new(
            response.into_body(),
            upstream.body_idle,
        ));
        crate::body::buffer(body, 64 * 1024).await.ok()?;
        Some(status)
    };
    match tokio::time::timeout(timeout, answer).await {
        Ok(Some(status)) => {
            status.is_success() || status.is_redirection() || status == StatusCode::NOT_MODIFIED
        }
        _ => false,
    }
}
