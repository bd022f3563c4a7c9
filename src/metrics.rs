//! Prometheus metrics, kept in memory and rendered in the text format. Labels are
//! fixed route names, status codes, configured tenant names and fixed reasons:
//! never a token, a path or any value a caller sent.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Default, Clone)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), Histogram>>,
    tenant_ops: Mutex<BTreeMap<String, BTreeMap<&'static str, u64>>>,
    handshake_failures: Mutex<BTreeMap<&'static str, u64>>,
    active_connections: AtomicI64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    pub fn observe_request(&self, route: &'static str, status: u16, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let mut map = lock(&self.requests);
        let h = map.entry((route, status)).or_default();
        h.count += 1;
        h.sum += seconds;
        for (slot, bound) in h.buckets.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *slot += 1;
            }
        }
    }

    /// Counts a successful tokenize or detokenize in a (configured) tenant.
    pub fn count_tenant_op(&self, tenant: &str, op: &'static str) {
        let mut map = lock(&self.tenant_ops);
        // The tenant's label is allocated once, not on every request.
        match map.get_mut(tenant) {
            Some(counts) => *counts.entry(op).or_default() += 1,
            None => {
                map.entry(tenant.to_owned()).or_default().insert(op, 1);
            }
        }
    }

    pub fn handshake_failed(&self, reason: &'static str) {
        *lock(&self.handshake_failures).entry(reason).or_default() += 1;
    }

    pub fn connection_opened(&self) {
        self.active_connections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.active_connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// The text exposition, with `gauges` (name, help, value) appended.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(out, "# HELP tokenvault_requests_total Requests by route and status.");
        let _ = writeln!(out, "# TYPE tokenvault_requests_total counter");
        let requests = lock(&self.requests).clone();
        for ((route, status), h) in &requests {
            let _ = writeln!(
                out,
                "tokenvault_requests_total{{route=\"{route}\",status=\"{status}\"}} {}",
                h.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP tokenvault_request_duration_seconds Request latency by route and status."
        );
        let _ = writeln!(out, "# TYPE tokenvault_request_duration_seconds histogram");
        for ((route, status), h) in &requests {
            let labels = format!("route=\"{route}\",status=\"{status}\"");
            for (bound, n) in BUCKETS.iter().zip(h.buckets) {
                let _ = writeln!(
                    out,
                    "tokenvault_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "tokenvault_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "tokenvault_request_duration_seconds_sum{{{labels}}} {}", h.sum);
            let _ = writeln!(out, "tokenvault_request_duration_seconds_count{{{labels}}} {}", h.count);
        }
        let _ = writeln!(
            out,
            "# HELP tokenvault_operations_total Successful tokenize and detokenize operations by tenant."
        );
        let _ = writeln!(out, "# TYPE tokenvault_operations_total counter");
        for (tenant, ops) in lock(&self.tenant_ops).iter() {
            for (op, n) in ops {
                let _ = writeln!(
                    out,
                    "tokenvault_operations_total{{tenant=\"{tenant}\",operation=\"{op}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP tokenvault_tls_handshake_failures_total Failed TLS handshakes by reason."
        );
        let _ = writeln!(out, "# TYPE tokenvault_tls_handshake_failures_total counter");
        for (reason, n) in lock(&self.handshake_failures).iter() {
            let _ = writeln!(
                out,
                "tokenvault_tls_handshake_failures_total{{reason=\"{reason}\"}} {n}"
            );
        }
        let _ = writeln!(out, "# HELP tokenvault_active_connections Open client connections.");
        let _ = writeln!(out, "# TYPE tokenvault_active_connections gauge");
        let _ = writeln!(
            out,
            "tokenvault_active_connections {}",
            self.active_connections.load(Ordering::Relaxed)
        );
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}

/// A handshake error's reason, from a fixed list.
pub fn handshake_reason(error: &std::io::Error) -> &'static str {
    use rustls::Error as E;
    match error.get_ref().and_then(|e| e.downcast_ref::<E>()) {
        Some(E::NoCertificatesPresented) => "no_certificate",
        Some(E::InvalidCertificate(_)) => "bad_certificate",
        Some(E::NoApplicationProtocol) => "alpn",
        Some(E::PeerIncompatible(_)) => "incompatible",
        Some(E::AlertReceived(_)) => "alert_received",
        Some(_) => "protocol",
        None => "io",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.observe_request("tokenize", 201, Duration::from_millis(3));
        m.count_tenant_op("shop", "tokenize");
        m.handshake_failed("no_certificate");
        let text = m.render(&[("tokenvault_key_version", "Active key version.", 1.0)]);
        assert!(text.contains("tokenvault_requests_total{route=\"tokenize\",status=\"201\"} 1"));
        assert!(text
            .contains("tokenvault_request_duration_seconds_bucket{route=\"tokenize\",status=\"201\",le=\"0.005\"} 1"));
        assert!(text
            .contains("tokenvault_request_duration_seconds_bucket{route=\"tokenize\",status=\"201\",le=\"0.0025\"} 0"));
        assert!(text.contains("tokenvault_operations_total{tenant=\"shop\",operation=\"tokenize\"} 1"));
        assert!(text.contains("tokenvault_key_version 1"));
    }
}
