//! Human output of the client commands: aligned tables and a pull progress line.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use crate::proto::admin::{ListPeersResponse, NodeInfo};
use crate::proto::resource as pb;

/// Columns padded to their widest cell; the last column is not padded.
pub(super) fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, (cell, w)) in cells.into_iter().zip(&widths).enumerate() {
            if i == last {
                s.push_str(&cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

fn cpu(millis: u64) -> String {
    if millis % 1000 == 0 {
        format!("{}", millis / 1000)
    } else {
        format!("{:.2}", millis as f64 / 1000.0)
    }
}

fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "Ki", "Mi", "Gi", "Ti"];
    if b == u64::MAX {
        return "-".into();
    }
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 || v >= 100.0 {
        format!("{v:.0}{}", UNITS[unit])
    } else {
        format!("{v:.1}{}", UNITS[unit])
    }
}

/// Storage that is not accounted reads "unlimited".
fn storage(b: u64) -> String {
    if b == crate::resource::UNLIMITED {
        "unlimited".into()
    } else {
        bytes(b)
    }
}

fn avail_of(c: Option<&pb::Capacity>) -> (pb::Resources, pb::Resources) {
    let c = c.cloned().unwrap_or_default();
    (c.available.unwrap_or_default(), c.total.unwrap_or_default())
}

pub fn peers(node: &NodeInfo, peers: &ListPeersResponse) -> String {
    let rows = peers
        .peers
        .iter()
        .map(|p| {
            let name = if p.is_self {
                format!("{} (this node)", p.name)
            } else {
                p.name.clone()
            };
            vec![
                p.id.clone(),
                name,
                p.addr.clone(),
                p.state.clone(),
                p.generation.to_string(),
                if p.last_heard_secs < 0.0 {
                    "-".into()
                } else {
                    format!("{:.1}s", p.last_heard_secs)
                },
                p.providers.len().to_string(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "ID",
            "NAME",
            "ADDRESS",
            "STATE",
            "GENERATION",
            "HEARD",
            "PROVIDERS",
        ],
        rows,
    );
    out.push_str(&format!(
        "{} alive, {} suspect, {} dead, {} left (as seen by {})\n",
        peers.alive, peers.suspect, peers.dead, peers.left, node.id
    ));
    out
}

pub fn providers(list: &pb::ListProvidersResponse) -> String {
    let rows = list
        .providers
        .iter()
        .map(|p| {
            let (a, t) = avail_of(p.capacity.as_ref());
            vec![
                p.id.clone(),
                p.r#type.clone(),
                p.tier.clone(),
                p.owner_id.clone(),
                if p.healthy { "active" } else { "unhealthy" }.into(),
                format!("{}/{}", cpu(a.cpu_millis), cpu(t.cpu_millis)),
                format!("{}/{}", bytes(a.memory_bytes), bytes(t.memory_bytes)),
                format!("{}/{}", a.gpus, t.gpus),
                p.capacity.as_ref().map_or("0".into(), running_of_max),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "TYPE",
            "TIER",
            "OWNER",
            "STATUS",
            "CPU FREE/ALL",
            "MEMORY FREE/ALL",
            "GPU FREE/ALL",
            "DEPLOYMENTS",
        ],
        rows,
    )
}

/// `3/4` under a `max_deployments` of 4, `3` without a limit.
fn running_of_max(c: &pb::Capacity) -> String {
    match c.max_deployments {
        0 => c.deployments.to_string(),
        max => format!("{}/{max}", c.deployments),
    }
}

pub fn capacity(c: &pb::GetCapacityResponse) -> String {
    let row = |scope: &str, cap: Option<&pb::Capacity>| {
        let cap = cap.cloned().unwrap_or_default();
        let (t, r, a) = (
            cap.total.unwrap_or_default(),
            cap.reserved.unwrap_or_default(),
            cap.available.unwrap_or_default(),
        );
        vec![
            scope.to_string(),
            format!(
                "{} / {} / {}",
                cpu(t.cpu_millis),
                cpu(r.cpu_millis),
                cpu(a.cpu_millis)
            ),
            format!(
                "{} / {} / {}",
                bytes(t.memory_bytes),
                bytes(r.memory_bytes),
                bytes(a.memory_bytes)
            ),
            format!("{} / {} / {}", t.gpus, r.gpus, a.gpus),
            format!(
                "{} / {} / {}",
                storage(t.storage_bytes),
                bytes(r.storage_bytes),
                storage(a.storage_bytes)
            ),
        ]
    };
    let mut out = table(
        &[
            "SCOPE",
            "CPU TOTAL/RESERVED/FREE",
            "MEMORY",
            "GPU",
            "STORAGE",
        ],
        vec![row("node", c.node.as_ref()), row("mesh", c.mesh.as_ref())],
    );
    out.push_str(&format!("{} providers\n", c.providers));
    if !c.deployments.is_empty() {
        let sorted: BTreeMap<&String, &u64> = c.deployments.iter().collect();
        let by_state: Vec<String> = sorted.iter().map(|(s, n)| format!("{n} {s}")).collect();
        out.push_str(&format!(
            "deployments in the mesh: {}\n",
            by_state.join(", ")
        ));
    }
    if !c.missing_nodes.is_empty() {
        out.push_str(&format!(
            "not counted (no answer in time): {}\n",
            c.missing_nodes.join(", ")
        ));
    }
    out
}

pub fn deployments(list: &[pb::Deployment]) -> String {
    let rows = list
        .iter()
        .map(|d| {
            vec![
                d.id.clone(),
                d.request_id.clone(),
                d.image.clone(),
                d.state.clone(),
                d.provider_id.clone(),
                d.owner_id.clone(),
                d.home_id.clone(),
            ]
        })
        .collect();
    table(
        &[
            "ID", "REQUEST", "IMAGE", "STATE", "PROVIDER", "OWNER", "HOME",
        ],
        rows,
    )
}

pub fn queue(entries: &[pb::QueueEntry]) -> String {
    let rows = entries
        .iter()
        .map(|e| {
            let priority = if e.priority_value == 0 {
                e.priority.clone()
            } else {
                format!("{}{:+}", e.priority, e.priority_value)
            };
            vec![
                e.position.to_string(),
                e.id.clone(),
                e.request_id.clone(),
                priority,
                humantime::format_duration(Duration::from_secs(e.age_secs as u64)).to_string(),
                humantime::format_duration(Duration::from_secs(e.expires_in_secs as u64))
                    .to_string(),
                e.reason.clone(),
            ]
        })
        .collect();
    table(
        &[
            "POS",
            "ID",
            "REQUEST",
            "PRIORITY",
            "AGE",
            "EXPIRES IN",
            "REASON",
        ],
        rows,
    )
}

pub fn deployment(d: &pb::Deployment) -> String {
    let r = d.resources.unwrap_or_default();
    let mut out = format!(
        "id:        {}\nrequest:   {}\nimage:     {}\nstate:     {}\nprovider:  {} (node {})\nhome:      {}\nresources: cpu {} memory {} gpu {}\n",
        d.id,
        d.request_id,
        d.image,
        d.state,
        d.provider_id,
        d.owner_id,
        if d.home_id.is_empty() {
            "(unknown: answered by its owner)"
        } else {
            &d.home_id
        },
        cpu(r.cpu_millis),
        bytes(r.memory_bytes),
        r.gpus
    );
    if !d.gpus.is_empty() {
        out.push_str(&format!("gpus:      {}\n", d.gpus.join(", ")));
    }
    if !d.reason.is_empty() {
        out.push_str(&format!("reason:    {}\n", d.reason));
    }
    if d.restarts > 0 {
        out.push_str(&format!("restarts:  {}\n", d.restarts));
    }
    if let Some(l) = &d.lease {
        out.push_str(&format!("{}\n", lease_line(l)));
    }
    if d.preemptible {
        out.push_str(&format!("preemptible: yes, at priority {}\n", d.priority));
    }
    if d.attempts.len() > 1 {
        out.push_str("attempts:\n");
        for a in &d.attempts {
            out.push_str(&format!(
                "  #{} {} on {} at {}{}\n",
                a.attempt,
                a.provider_id,
                a.owner_id,
                humantime::format_rfc3339_seconds(crate::resource::wire::from_unix(a.placed_unix)),
                if a.ended.is_empty() {
                    String::new()
                } else {
                    format!(": {}", a.ended)
                }
            ));
        }
    }
    out.push_str("history:\n");
    for h in &d.history {
        let at = crate::resource::wire::from_unix(h.at_unix);
        out.push_str(&format!(
            "  {}  {}{}\n",
            humantime::format_rfc3339_seconds(at),
            h.state,
            if h.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", h.detail)
            }
        ));
    }
    out
}

/// `lease:     active (LEASED), epoch 3, expires in 9m 58s, 1/3 renewals, holder n1`
pub fn lease_line(l: &pb::Lease) -> String {
    let renewals = match l.max_renewals {
        Some(max) => format!("{}/{max} renewals", l.renewals),
        None => format!("{} renewals", l.renewals),
    };
    let when = if l.state == "active" {
        let left = std::time::Duration::from_secs(l.expires_in_secs.max(0.0) as u64);
        format!("expires in {}", humantime::format_duration(left))
    } else {
        format!("ended ({})", l.state)
    };
    format!(
        "lease:     {} ({}), epoch {}, ttl {}s{}, {when}, {renewals}, holder {}",
        l.state,
        l.seed_state,
        l.epoch,
        l.ttl_secs,
        if l.auto_renew { " auto-renew" } else { "" },
        l.holder
    )
}

/// Image pull progress on stderr: one line redrawn in place on a terminal,
/// else one line per layer status change (logs stay readable).
pub struct Progress {
    tty: bool,
    layers: BTreeMap<String, (String, u64, u64)>,
    open_line: bool,
}

impl Progress {
    pub fn new(tty: bool) -> Progress {
        Progress {
            tty,
            layers: BTreeMap::new(),
            open_line: false,
        }
    }

    pub fn pull(&mut self, p: &pb::PullProgress) {
        let changed = self
            .layers
            .get(&p.layer)
            .is_none_or(|(status, _, _)| *status != p.status);
        self.layers
            .insert(p.layer.clone(), (p.status.clone(), p.current, p.total));
        let mut err = std::io::stderr().lock();
        if self.tty {
            let (cur, total) = self
                .layers
                .values()
                .fold((0, 0), |(c, t), (_, cur, tot)| (c + cur, t + tot));
            let done = self
                .layers
                .values()
                .filter(|(s, _, _)| s.contains("complete") || s.contains("exists"))
                .count();
            let _ = write!(
                err,
                "\r\x1b[Kpulling: {done}/{} layers, {} of {}",
                self.layers.len(),
                bytes(cur),
                bytes(total)
            );
            self.open_line = true;
        } else if changed {
            let layer = if p.layer.is_empty() {
                "image"
            } else {
                &p.layer
            };
            let _ = writeln!(err, "pull {layer}: {}", p.status);
        }
    }

    pub fn state(&mut self, state: &str) {
        self.finish();
        let _ = writeln!(std::io::stderr(), "{state}...");
    }

    /// Ends a line left open by a redraw.
    pub fn finish(&mut self) {
        if self.open_line {
            let _ = writeln!(std::io::stderr());
            self.open_line = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["ID", "STATE"],
            vec![
                vec!["a".into(), "alive".into()],
                vec!["longer-id".into(), "dead".into()],
            ],
        );
        assert_eq!(t, "ID         STATE\na          alive\nlonger-id  dead\n");
    }

    #[test]
    fn amounts_read_like_quantities() {
        assert_eq!(cpu(2000), "2");
        assert_eq!(cpu(1500), "1.50");
        assert_eq!(bytes(256 << 20), "256Mi");
        assert_eq!(bytes(1536 << 20), "1.5Gi");
        assert_eq!(bytes(u64::MAX), "-");
        assert_eq!(storage(u64::MAX), "unlimited");
        assert_eq!(storage(10 << 30), "10.0Gi");
    }
}
