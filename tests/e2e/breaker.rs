//! Circuit breaking per pool: a failing target is ejected (its circuit
//! opens), after the cool-down one probe request is let through (half-open)
//! and decides whether it returns (closed); a pool takes at most
//! `max_in_flight` requests plus `max_pending` waiting, then answers 503; and
//! retries stay within their budget.

use std::time::Duration;

use crate::support::{Backend, Gateway, Metrics, get, upstream};

fn pool(extra: &str, backends: &[&Backend]) -> String {
    format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nupstreams:\n{}routes:\n  - {{ name: all, upstream: pool }}\n",
        upstream("pool", backends, extra)
    )
}

/// The circuit of `target` as `/admin/pools` shows it.
async fn circuit(gw: &Gateway, target: &Backend) -> String {
    let pools = get(&gw.admin_url("/admin/pools")).await.json();
    let targets = pools["pools"][0]["targets"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    targets
        .iter()
        .find(|t| t["url"] == target.url())
        .and_then(|t| t["circuit"].as_str())
        .unwrap_or("missing")
        .to_string()
}

#[tokio::test]
async fn a_failing_target_opens_half_opens_for_one_probe_and_closes_once_it_recovers() {
    let good = Backend::start("good").await;
    let bad = Backend::start("bad").await;
    bad.serve("/", 500, "application/json", "{\"oops\":true}");
    let gw = Gateway::start(&pool(
        "    passive_health: { max_fails: 0, max_5xx: 3, cooldown: 1s }\n",
        &[&good, &bad],
    ));

    // Round robin sends every other request to `bad`; its third 500 in a
    // row opens its circuit, and the clients see its 500s until then.
    let mut errors = 0;
    for _ in 0..20 {
        errors += usize::from(get(&gw.url("/")).await.status == 500);
    }
    assert_eq!(errors, 3, "three 500s reached clients before the ejection");
    assert_eq!(bad.served(), 3);
    assert_eq!(circuit(&gw, &bad).await, "open");

    // After the cool-down one probe goes through; it fails, so the circuit
    // opens again and the requests after it all go to `good`.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(circuit(&gw, &bad).await, "half_open");
    let mut errors = 0;
    for _ in 0..10 {
        errors += usize::from(get(&gw.url("/")).await.status == 500);
    }
    assert_eq!(errors, 1, "one probe, and only one");
    assert_eq!(bad.served(), 4);
    assert_eq!(circuit(&gw, &bad).await, "open");

    // It recovers: the next probe succeeds and it takes its share again.
    bad.serve("/", 200, "application/json", "{\"fine\":true}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for _ in 0..10 {
        assert_eq!(get(&gw.url("/")).await.status, 200);
    }
    assert_eq!(circuit(&gw, &bad).await, "closed");
    assert!(
        bad.served() >= 4 + 5,
        "back in the rotation: {}",
        bad.served()
    );

    let metrics = Metrics::scrape(&gw).await;
    let target = bad.url();
    assert_eq!(
        metrics.value(
            "gateway_upstream_ejections_total",
            &[("upstream", "pool"), ("target", &target)]
        ),
        2.0,
        "{}",
        metrics.text
    );
    assert_eq!(
        metrics.value(
            "gateway_upstream_target_circuit",
            &[("upstream", "pool"), ("target", &target)]
        ),
        0.0
    );
    let log = gw.stderr();
    assert!(log.contains("target ejected after a 5xx answer"), "{log}");
    assert!(
        log.contains("target back in the pool: its probe was answered"),
        "{log}"
    );
}

#[tokio::test]
async fn an_error_rate_ejects_once_the_window_has_enough_requests() {
    let good = Backend::start("good").await;
    let flaky = Backend::start("flaky").await;
    flaky.serve("/", 503, "application/json", "{}");
    let gw = Gateway::start(&pool(
        "    passive_health: { max_fails: 0, error_rate: { threshold: 0.5, window: 30s, min_requests: 6 }, cooldown: 30s }\n",
        &[&good, &flaky],
    ));
    for _ in 0..30 {
        get(&gw.url("/")).await;
    }
    assert_eq!(
        flaky.served(),
        6,
        "ejected at its sixth request, when the window had enough"
    );
    assert_eq!(circuit(&gw, &flaky).await, "open");
}

#[tokio::test]
async fn a_pool_past_its_in_flight_and_pending_limits_answers_503() {
    let slow = Backend::start("slow").await;
    slow.set_delay(Duration::from_millis(600));
    let gw = Gateway::start(&pool(
        "    circuit_breaker: { max_in_flight: 2, max_pending: 1 }\n",
        &[&slow],
    ));
    let url = gw.url("/");
    let requests: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    let mut ok = 0;
    let mut overloaded = 0;
    for request in requests {
        let reply = request.await.expect("task");
        match reply.status.as_u16() {
            200 => ok += 1,
            503 => {
                assert_eq!(reply.error_code(), "upstream_overloaded");
                assert!(!reply.request_id().is_empty());
                overloaded += 1;
            }
            other => panic!("unexpected {other}: {:?}", reply.body),
        }
    }
    assert_eq!(
        (ok, overloaded),
        (3, 3),
        "two in flight and one waiting are served"
    );
    assert_eq!(slow.served(), 3);
    let metrics = Metrics::scrape(&gw).await;
    assert_eq!(
        metrics.value("gateway_upstream_overloaded_total", &[("upstream", "pool")]),
        3.0
    );
    // Once they are done the pool takes requests again.
    assert_eq!(get(&url).await.status, 200);
}

#[tokio::test]
async fn retries_stay_within_the_retry_budget() {
    let alive = Backend::start("alive").await;
    let dead = Backend::start("dead").await;
    dead.stop();
    let gw = Gateway::start(&pool(
        "    passive_health: { max_fails: 0 }\n    circuit_breaker: { retry_budget: { ratio: 0.1, min_retries: 2, window: 60s } }\n",
        &[&alive, &dead],
    ));
    let mut ok = 0;
    let mut failed = 0;
    for _ in 0..40 {
        match get(&gw.url("/")).await.status.as_u16() {
            200 => ok += 1,
            502 => failed += 1,
            other => panic!("unexpected {other}"),
        }
    }
    // Round robin sends every other request to the dead target first (a
    // retry's pick does not move it along). Retries may be a tenth of the
    // requests sent (4 of 40), or the minimum of 2 before there were 20:
    // the rest of those 20 requests fail.
    let metrics = Metrics::scrape(&gw).await;
    let retries = |result: &str| {
        metrics.value(
            "gateway_upstream_retries_total",
            &[("upstream", "pool"), ("result", result)],
        )
    };
    let (sent, refused) = (retries("sent"), retries("over_budget"));
    assert!((2.0..=4.0).contains(&sent), "{sent} retries sent");
    assert_eq!(refused, f64::from(failed), "{}", metrics.text);
    assert_eq!(f64::from(failed) + sent, 20.0, "{ok} ok, {failed} failed");
    assert_eq!(
        metrics.value(
            "gateway_upstream_failures_total",
            &[
                ("upstream", "pool"),
                ("target", &dead.url()),
                ("reason", "connect")
            ]
        ),
        sent + refused,
        "every failed first attempt was either retried or refused"
    );
}

#[tokio::test]
async fn time_spent_waiting_for_a_place_never_counts_against_the_target() {
    // A request that waited in line has less than its whole timeout left:
    // if the target is slow it times out, but that says nothing about the
    // target, so clients cannot get a healthy pool ejected by queueing.
    let slow = Backend::start("slow").await;
    slow.set_delay(Duration::from_millis(600));
    let gw = Gateway::start(&pool(
        "    timeouts: { request: 1s }\n    passive_health: { max_fails: 1, cooldown: 30s }\n    circuit_breaker: { max_in_flight: 1, max_pending: 5 }\n",
        &[&slow],
    ));
    let url = gw.url("/");
    let requests: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let reply = get(&url).await;
                let code = if reply.status == 200 {
                    String::new()
                } else {
                    reply.error_code()
                };
                (reply.status.as_u16(), code)
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.expect("task"));
    }
    statuses.sort_unstable();
    // The first is served; the waiters time out, at the target (504) or,
    // the last, still in line (503 upstream_overloaded) on a busy machine.
    assert_eq!(statuses[0].0, 200, "{statuses:?}");
    for (status, code) in &statuses[1..] {
        assert!(
            *status == 504 || (*status == 503 && code == "upstream_overloaded"),
            "{statuses:?}"
        );
    }
    assert_eq!(circuit(&gw, &slow).await, "closed");
    assert_eq!(get(&url).await.status, 200);
}
