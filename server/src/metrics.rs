//! `/metrics`: the hub's counters in the Prometheus text format (0.0.4), on the admin listener
//! with the admin token (the figures name every tenant). docs/operations.md is
//! the reference of every family below.

use std::fmt::{Display, Write};

use ironhub_core::egress::SinkStatsSnapshot;
use ironhub_core::hub::StatsSnapshot;
use ironhub_core::store::timed::{BUCKETS_US, LatencyHistogram};

/// Builds the exposition text family by family.
#[derive(Default)]
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = write!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        self
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                // Label values here are ids and names the hub validated; escape anyway.
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.out, "{k}=\"{v}\"");
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
        self
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &LatencyHistogram) {
        let bounds = BUCKETS_US
            .iter()
            .map(|us| (*us as f64 / 1e6).to_string())
            .chain(["+Inf".to_owned()]);
        for (le, n) in bounds.zip(h.cumulative) {
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&format!("{name}_bucket"), &with_le, n);
        }
        self.sample(&format!("{name}_sum"), labels, h.sum_us as f64 / 1e6);
        self.sample(&format!("{name}_count"), labels, h.count);
    }
}

const QOS: [&str; 3] = ["0", "1", "2"];

/// A per-sink family: name, type, help, and the value of one sink.
type SinkFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&SinkStatsSnapshot) -> u64,
);

/// The exposition of the hub's counters and its sinks'.
pub fn render(s: &StatsSnapshot, sinks: &[SinkStatsSnapshot]) -> String {
    let mut e = Exposition::default();
    e.family(
        "ironhub_node_info",
        "gauge",
        "This node: version, store backend, cluster node id (empty for a single node).",
    )
    .sample(
        "ironhub_node_info",
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("store", s.store.backend),
            ("node", s.node.as_deref().unwrap_or("")),
        ],
        1,
    );
    e.family(
        "ironhub_cluster_nodes",
        "gauge",
        "Live nodes of the cluster as of the last heartbeat, this one included (1 alone).",
    )
    .sample("ironhub_cluster_nodes", &[], s.cluster_nodes);

    e.family(
        "ironhub_connections_open",
        "gauge",
        "Connections open now, by transport.",
    );
    for (t, v) in &s.transports {
        e.sample("ironhub_connections_open", &[("transport", t)], v.open);
    }
    e.family(
        "ironhub_connections_accepted_total",
        "counter",
        "Connections accepted (HTTP and CoAP: device tokens issued), by transport.",
    );
    for (t, v) in &s.transports {
        e.sample(
            "ironhub_connections_accepted_total",
            &[("transport", t)],
            v.accepted,
        );
    }
    e.family(
        "ironhub_connections_refused_total",
        "counter",
        "Connections refused, by transport and reason.",
    );
    for (t, v) in &s.transports {
        for (reason, n) in &v.refused {
            e.sample(
                "ironhub_connections_refused_total",
                &[("transport", t), ("reason", reason)],
                n,
            );
        }
    }
    e.family(
        "ironhub_messages_received_total",
        "counter",
        "Messages accepted from devices and clients, by transport and QoS.",
    );
    for (t, v) in &s.transports {
        for (qos, n) in QOS.iter().zip(v.received) {
            e.sample(
                "ironhub_messages_received_total",
                &[("transport", t), ("qos", qos)],
                n,
            );
        }
    }
    e.family(
        "ironhub_messages_in_total",
        "counter",
        "Messages routed (from clients, the business API and the hub).",
    )
    .sample("ironhub_messages_in_total", &[], s.messages_in);
    e.family(
        "ironhub_deliveries_total",
        "counter",
        "Deliveries handed to sessions, by QoS.",
    );
    for (qos, n) in QOS.iter().zip(s.delivered_by_qos) {
        e.sample("ironhub_deliveries_total", &[("qos", qos)], n);
    }
    e.family(
        "ironhub_sub_devices_online",
        "gauge",
        "Sub-devices online through their gateways' connections (not counted as connections).",
    )
    .sample("ironhub_sub_devices_online", &[], s.sub_devices_online);
    e.family(
        "ironhub_sessions",
        "gauge",
        "Sessions known (connected or stored).",
    )
    .sample("ironhub_sessions", &[], s.sessions);
    e.family(
        "ironhub_sessions_expired_total",
        "counter",
        "Expired sessions reclaimed.",
    )
    .sample("ironhub_sessions_expired_total", &[], s.sessions_expired);
    e.family(
        "ironhub_dropped_total",
        "counter",
        "Deliveries dropped, by reason.",
    );
    let mut dropped: Vec<_> = s.dropped.iter().collect();
    dropped.sort();
    for (reason, n) in dropped {
        e.sample("ironhub_dropped_total", &[("reason", reason)], n);
    }
    e.family(
        "ironhub_limited_total",
        "counter",
        "Requests stopped by a documented limit (docs/limits.md), by limit id.",
    );
    for (limit, n) in &s.limited {
        e.sample("ironhub_limited_total", &[("limit", limit)], n);
    }

    e.family(
        "ironhub_store_seconds",
        "histogram",
        "Store latency: reads (get, range) and commits.",
    );
    let backend = s.store.backend;
    e.histogram(
        "ironhub_store_seconds",
        &[("backend", backend), ("op", "read")],
        &s.store.read,
    );
    e.histogram(
        "ironhub_store_seconds",
        &[("backend", backend), ("op", "commit")],
        &s.store.commit,
    );

    e.family(
        "ironhub_tenant_connections_open",
        "gauge",
        "Connections open now, by tenant.",
    );
    for (tenant, n) in &s.tenants_online {
        e.sample("ironhub_tenant_connections_open", &[("tenant", tenant)], n);
    }
    e.family(
        "ironhub_tenant_monthly_used",
        "gauge",
        "Admitted this month against a monthly limit (L-070..L-072), by tenant.",
    );
    for (tenant, usage) in &s.tenants_monthly {
        for u in usage {
            e.sample(
                "ironhub_tenant_monthly_used",
                &[("tenant", tenant), ("limit", &u.limit)],
                u.used,
            );
        }
    }
    e.family(
        "ironhub_tenant_monthly_limit",
        "gauge",
        "The tenant profile's monthly limit (0 = unlimited), by tenant.",
    );
    for (tenant, usage) in &s.tenants_monthly {
        for u in usage {
            e.sample(
                "ironhub_tenant_monthly_limit",
                &[("tenant", tenant), ("limit", &u.limit)],
                u.limit_value,
            );
        }
    }

    let per_sink: [SinkFamily; 7] = [
        (
            "ironhub_sink_confirmed_total",
            "counter",
            "Events a sink's destination confirmed.",
            |k| k.confirmed,
        ),
        (
            "ironhub_sink_stored_total",
            "counter",
            "Events written to the outbox because the sink did not confirm them in time.",
            |k| k.stored,
        ),
        (
            "ironhub_sink_resent_total",
            "counter",
            "Events confirmed after waiting in the outbox (retries).",
            |k| k.resent,
        ),
        (
            "ironhub_sink_send_failures_total",
            "counter",
            "Failed send attempts (batches).",
            |k| k.send_failures,
        ),
        (
            "ironhub_sink_dropped_total",
            "counter",
            "Events dropped: QoS 0 at a full buffer, expired in the outbox, or rejected for good.",
            |k| k.dropped_buffer_full + k.expired + k.rejected,
        ),
        (
            "ironhub_sink_outbox",
            "gauge",
            "Events waiting in the outbox.",
            |k| k.outbox,
        ),
        (
            "ironhub_sink_buffered",
            "gauge",
            "Events waiting in the in-memory buffer.",
            |k| k.buffered,
        ),
    ];
    for (name, kind, help, value) in per_sink {
        e.family(name, kind, help);
        for k in sinks {
            e.sample(name, &[("sink", &k.sink)], value(k));
        }
    }
    e.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_with_sum_and_count_and_labels_are_escaped() {
        let mut e = Exposition::default();
        let mut h = LatencyHistogram {
            count: 3,
            sum_us: 1_500,
            ..Default::default()
        };
        h.cumulative = [1, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3];
        e.histogram("x_seconds", &[("op", "read")], &h);
        e.sample("y", &[("tenant", "a\"b")], 1);
        assert!(
            e.out
                .contains("x_seconds_bucket{op=\"read\",le=\"0.0001\"} 1\n"),
            "{}",
            e.out
        );
        assert!(
            e.out
                .contains("x_seconds_bucket{op=\"read\",le=\"+Inf\"} 3\n")
        );
        assert!(e.out.contains("x_seconds_sum{op=\"read\"} 0.0015\n"));
        assert!(e.out.contains("x_seconds_count{op=\"read\"} 3\n"));
        assert!(e.out.contains("y{tenant=\"a\\\"b\"} 1\n"));
    }
}
