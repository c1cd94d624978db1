//! How requests spread over a pool's targets.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::{Backend, Gateway, get, get_with, upstream};

async fn backends(names: &[&str]) -> Vec<Backend> {
    let mut list = Vec::new();
    for name in names {
        list.push(Backend::start(name).await);
    }
    list
}

fn one_route(pool: &str) -> String {
    format!("upstreams:\n{pool}routes:\n  - {{ name: all, upstream: pool }}\n")
}

async fn tally(gw: &Gateway, requests: usize) -> (Vec<String>, HashMap<String, usize>) {
    let mut order = Vec::new();
    let mut counts = HashMap::new();
    for _ in 0..requests {
        let backend = get(&gw.url("/")).await.backend();
        *counts.entry(backend.clone()).or_insert(0) += 1;
        order.push(backend);
    }
    (order, counts)
}

#[tokio::test]
async fn round_robin_is_exact_and_in_order() {
    let b = backends(&["a", "b", "c"]).await;
    let gw = Gateway::start(&one_route(&upstream(
        "pool",
        &[&b[0], &b[1], &b[2]],
        "    balance: round_robin\n",
    )));
    let (order, _) = tally(&gw, 30).await;
    let first = order.iter().position(|n| n == "a").expect("a served");
    for (i, name) in order.iter().enumerate() {
        // Whatever the starting point, the cycle is a, b, c.
        let expected = ["a", "b", "c"][(i + 3 - first) % 3];
        assert_eq!(name, expected, "request {i} in {order:?}");
    }
}

#[tokio::test]
async fn weighted_round_robin_honours_weights_exactly() {
    let b = backends(&["heavy", "light"]).await;
    let pool = format!(
        "  pool:\n    targets:\n      - {{ url: \"{}\", weight: 3 }}\n      - {{ url: \"{}\", weight: 1 }}\n",
        b[0].url(),
        b[1].url()
    );
    let gw = Gateway::start(&one_route(&pool));
    let (_, counts) = tally(&gw, 200).await;
    assert_eq!(counts["heavy"], 150);
    assert_eq!(counts["light"], 50);
}

#[tokio::test]
async fn random_follows_weights_within_a_wide_margin() {
    let b = backends(&["heavy", "light"]).await;
    let pool = format!(
        "  pool:\n    balance: random\n    targets:\n      - {{ url: \"{}\", weight: 3 }}\n      - {{ url: \"{}\", weight: 1 }}\n",
        b[0].url(),
        b[1].url()
    );
    let gw = Gateway::start(&one_route(&pool));
    let (_, counts) = tally(&gw, 400).await;
    let (heavy, light) = (counts["heavy"], counts.get("light").copied().unwrap_or(0));
    assert_eq!(heavy + light, 400);
    // Expected 300/100; anything from 2:1 to 5:1 is a working weighted random.
    assert!(
        heavy >= 2 * light && heavy <= 5 * light,
        "heavy {heavy}, light {light}"
    );
}

#[tokio::test]
async fn least_request_steers_away_from_a_slow_target() {
    let b = backends(&["slow", "fast"]).await;
    b[0].set_delay(Duration::from_millis(300));
    let gw = Gateway::start(&one_route(&upstream(
        "pool",
        &[&b[0], &b[1]],
        "    balance: least_request\n",
    )));
    // Eight clients, each sending requests back to back for a while.
    let url = gw.url("/");
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut served = Vec::new();
                for _ in 0..6 {
                    served.push(get(&url).await.backend());
                }
                served
            })
        })
        .collect();
    let mut counts = HashMap::new();
    for client in clients {
        for backend in client.await.expect("client task") {
            *counts.entry(backend).or_insert(0usize) += 1;
        }
    }
    let (slow, fast) = (counts.get("slow").copied().unwrap_or(0), counts["fast"]);
    // Round robin would give 24/24; least-request sends most to the fast one.
    assert!(fast >= 3 * slow, "fast {fast}, slow {slow}");
}

#[tokio::test]
async fn consistent_hash_is_sticky_and_a_lost_target_moves_only_its_keys() {
    let b = backends(&["a", "b", "c"]).await;
    let extra = "    balance: consistent_hash\n    hash_on: header:x-user-id\n    health_check: { path: /healthz, interval: 100ms, healthy_after: 1, unhealthy_after: 1 }\n";
    let gw = Gateway::start(&one_route(&upstream("pool", &[&b[0], &b[1], &b[2]], extra)));
    let url = gw.url("/");
    let owner = |user: usize| {
        let url = url.clone();
        async move {
            get_with(&url, "x-user-id", &format!("user-{user}"))
                .await
                .backend()
        }
    };
    let mut before = Vec::new();
    for user in 0..60 {
        before.push(owner(user).await);
    }
    for (user, first_owner) in before.iter().enumerate() {
        assert_eq!(
            &owner(user).await,
            first_owner,
            "user-{user} moved without cause"
        );
    }
    let owned_by_b = before.iter().filter(|o| *o == "b").count();
    assert!(
        owned_by_b > 0 && owned_by_b < 60,
        "keys spread over targets: {before:?}"
    );

    b[1].set_healthy(false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (user, first_owner) in before.iter().enumerate() {
        let now = owner(user).await;
        if first_owner == "b" {
            assert_ne!(now, "b", "user-{user} still sent to the ejected target");
        } else {
            assert_eq!(
                &now, first_owner,
                "user-{user} moved though its target stayed"
            );
        }
    }
}
