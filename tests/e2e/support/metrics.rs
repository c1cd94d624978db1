//! `GET /metrics` read the way Prometheus reads it: every line must be
//! Prometheus text (a line the parser would skip fails the test), then
//! samples are looked up by name and labels.

use prometheus_parse::{LineInfo, Scrape, Value};

use super::{Gateway, get};

pub struct Metrics {
    pub text: String,
    scrape: Scrape,
}

impl Metrics {
    /// Scrapes the gateway's admin listener.
    pub async fn scrape(gw: &Gateway) -> Metrics {
        let reply = get(&gw.admin_url("/metrics")).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(
            reply.headers["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let text = String::from_utf8(reply.body.to_vec()).expect("UTF-8");
        for line in text.lines() {
            assert!(
                !matches!(LineInfo::parse(line), LineInfo::Ignored),
                "not Prometheus text: {line:?}"
            );
        }
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses");
        Metrics { text, scrape }
    }

    /// The sum of the samples of `metric` carrying all of `labels` (for a
    /// histogram, its count); 0 when there are none.
    pub fn value(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric == metric)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match &s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
                Value::Summary(_) => 0.0,
            })
            .sum()
    }
}
