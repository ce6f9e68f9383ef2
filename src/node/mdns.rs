//! Zero-configuration LAN discovery over multicast DNS: nodes on one LAN
//! find each other with no `initial_peers`.
//!
//! When `discovery.mdns` is on (or `auto` with no configured seeds) the node
//! advertises `_iarnet._tcp.local.`: the instance is the node id, the port is
//! the gRPC port of its advertised address, and the TXT record carries `id`,
//! `port`, `remote` (allow_remote_access, 1/0), `tls` (1/0) and `groups` (its
//! swarm groups, comma-separated, re-announced when they change). It browses
//! the same type, and every other instance it resolves becomes `IP:port`
//! addresses (IPv4 preferred) in [`Discovered`], which the seed loop adds to
//! the configured seeds. That is all discovery does: gossip still owns
//! membership and liveness, a discovered address is only ever a seed, and it
//! is forgotten when the instance goes away or is not seen for a while.
//!
//! Discovery never grants trust. With mutual TLS on, a discovered node must
//! pass the same handshake as any seed; an instance whose `tls` flag differs
//! from ours is skipped only because dialling it could not succeed.
//!
//! Interfaces listed in `discovery.mdns_exclude` (docker0, veth*, ...) are
//! disabled in the mDNS daemon, so the node neither listens nor answers on
//! them. The daemon (mdns-sd) runs its own thread; this task talks to it
//! over its async channels, is cancelled with the node, and unregisters
//! before it stops so peers forget this node at once.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mdns_sd::{IfKind, IfPredicate, ResolvedService, ServiceDaemon, ServiceEvent, ServiceInfo};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::shared::Shared;

/// The DNS-SD service type iarnet nodes advertise and browse.
pub const SERVICE_TYPE: &str = "_iarnet._tcp.local.";
/// How often the node's groups are compared with what it advertises.
const GROUPS_POLL: Duration = Duration::from_secs(3);
/// How often the browse restarts: it replays the daemon's cache (refreshing
/// what is still there) and sends queries at once again.
const REBROWSE: Duration = Duration::from_secs(120);
/// A discovered instance not resolved again for this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(300);
/// How long shutdown waits for the goodbye and for the daemon to stop.
const STOP_WAIT: Duration = Duration::from_secs(1);
/// A TXT string is at most 255 bytes, `groups=` included.
const MAX_GROUPS_TXT: usize = 255 - "groups=".len();

/// Addresses of peers found over mDNS, by instance name.
#[derive(Debug, Default)]
pub struct Discovered {
    found: Mutex<BTreeMap<String, Found>>,
    changed: Notify,
}

#[derive(Debug)]
struct Found {
    addrs: Vec<String>,
    seen: Instant,
}

impl Discovered {
    /// Every discovered address, sorted, without duplicates.
    pub fn addrs(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .lock()
            .values()
            .flat_map(|f| f.addrs.iter().cloned())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Resolves when the addresses changed since the last call returned.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Records `instance` at `addrs`; true when it is new.
    pub fn insert(&self, instance: &str, addrs: Vec<String>, now: Instant) -> bool {
        let previous = self.lock().insert(
            instance.to_string(),
            Found {
                addrs: addrs.clone(),
                seen: now,
            },
        );
        let new = previous.is_none();
        if previous.is_none_or(|p| p.addrs != addrs) {
            self.changed.notify_one();
        }
        new
    }

    /// Forgets `instance`; true when it was known.
    pub fn remove(&self, instance: &str) -> bool {
        let known = self.lock().remove(instance).is_some();
        if known {
            self.changed.notify_one();
        }
        known
    }

    /// Forgets the instances not seen within `ttl` of `now`, and returns them.
    pub fn expire(&self, now: Instant, ttl: Duration) -> Vec<String> {
        let mut gone = Vec::new();
        self.lock().retain(|name, f| {
            let keep = now.saturating_duration_since(f.seen) < ttl;
            if !keep {
                gone.push(name.clone());
            }
            keep
        });
        if !gone.is_empty() {
            self.changed.notify_one();
        }
        gone
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Found>> {
        // A map of addresses has no invariant a panicking writer could break.
        self.found.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The dialable `IP:port` addresses of a resolved instance: its routable
/// IPv4 addresses, else its routable IPv6 ones, else its loopback ones
/// (nodes on one host). Link-local IPv6 is left out (it needs a scope).
pub fn dial_addrs(ips: impl IntoIterator<Item = IpAddr>, port: u16) -> Vec<String> {
    let ips: Vec<IpAddr> = ips.into_iter().collect();
    let usable = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_link_local(),
        IpAddr::V6(v6) => !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80,
    };
    let pick = |v4: bool, loopback: bool| -> Vec<String> {
        let mut out: Vec<String> = ips
            .iter()
            .filter(|ip| ip.is_ipv4() == v4 && ip.is_loopback() == loopback && usable(ip))
            .map(|ip| std::net::SocketAddr::new(*ip, port).to_string())
            .collect();
        out.sort();
        out.dedup();
        out
    };
    [(true, false), (false, false), (true, true), (false, true)]
        .into_iter()
        .map(|(v4, lo)| pick(v4, lo))
        .find(|a| !a.is_empty())
        .unwrap_or_default()
}

/// The comma list of `groups` that fits in one TXT string (whole names only).
pub fn groups_txt(groups: &[String]) -> String {
    let mut out = String::new();
    for g in groups {
        let extra = g.len() + usize::from(!out.is_empty());
        if out.len() + extra > MAX_GROUPS_TXT {
            break;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(g);
    }
    out
}

/// A DNS host label made of the node id (letters, digits and '-' only).
fn host_label(id: &str) -> String {
    let label: String = id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    format!("{}.local.", label.trim_matches('-'))
}

/// What this node advertises.
#[derive(Debug, Clone, PartialEq)]
struct Advert {
    id: String,
    port: u16,
    remote: bool,
    tls: bool,
    groups: String,
}

impl Advert {
    fn of(shared: &Shared) -> Option<Advert> {
        let (id, addr) = {
            let mesh = shared.mesh();
            (mesh.id().to_string(), mesh.info().addr.clone())
        };
        let port = addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok())?;
        Some(Advert {
            id,
            port,
            remote: shared.config.resources.allow_remote_access,
            tls: shared.config.security.tls.is_some(),
            groups: groups_txt(&shared.own_groups()),
        })
    }

    fn service(&self) -> Result<ServiceInfo, mdns_sd::Error> {
        let flag = |b: bool| if b { "1" } else { "0" }.to_string();
        let txt = [
            ("id", self.id.clone()),
            ("port", self.port.to_string()),
            ("remote", flag(self.remote)),
            ("tls", flag(self.tls)),
            ("groups", self.groups.clone()),
        ];
        let info = ServiceInfo::new(
            SERVICE_TYPE,
            &self.id,
            &host_label(&self.id),
            "",
            self.port,
            &txt[..],
        )?;
        Ok(info.enable_addr_auto())
    }
}

/// Advertises this node and feeds the instances it resolves into
/// `shared.discovered` until `cancel`; returns at once when mDNS is off.
pub async fn mdns_loop(shared: Arc<Shared>, cancel: CancellationToken) {
    if !shared
        .config
        .discovery
        .mdns_enabled(&shared.config.initial_peers)
    {
        return;
    }
    let Some(mut advert) = Advert::of(&shared) else {
        warn!("mdns is off: the advertised address has no port");
        return;
    };
    let daemon = match ServiceDaemon::new() {
        Ok(d) => d,
        Err(e) => {
            warn!(error = %e, "mdns is off: cannot start the mdns daemon; use initial_peers");
            return;
        }
    };
    let discovery = shared.config.discovery.clone();
    let excluded = IfPredicate::new(move |intf| !discovery.interface_allowed(&intf.name));
    if let Err(e) = daemon.disable_interface(IfKind::Predicate(excluded)) {
        warn!(error = %e, "mdns is off: cannot exclude interfaces");
        stop(&daemon, None).await;
        return;
    }
    let mut fullname = register(&daemon, &advert);
    let mut events = match daemon.browse(SERVICE_TYPE) {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "mdns is off: cannot browse");
            stop(&daemon, fullname.as_deref()).await;
            return;
        }
    };
    info!(id = %advert.id, port = advert.port, service = SERVICE_TYPE, "mdns advertising and browsing");

    let mut groups_poll = tokio::time::interval(GROUPS_POLL);
    groups_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rebrowse = tokio::time::interval_at(Instant::now() + REBROWSE, REBROWSE);
    rebrowse.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            event = events.recv_async() => match event {
                Ok(event) => on_event(&shared, &advert, event),
                Err(_) => {
                    warn!("mdns daemon stopped; discovery ends (gossip and seeds go on)");
                    break;
                }
            },
            _ = groups_poll.tick() => {
                if let Some(now) = Advert::of(&shared).filter(|a| *a != advert) {
                    debug!(groups = %now.groups, "re-announcing over mdns");
                    advert = now;
                    fullname = register(&daemon, &advert).or(fullname);
                }
            }
            _ = rebrowse.tick() => {
                for gone in shared.discovered.expire(Instant::now(), FORGET_AFTER) {
                    info!(instance = %gone, "mdns peer not seen for a while; forgotten");
                }
                match daemon.browse(SERVICE_TYPE) {
                    Ok(r) => events = r,
                    Err(e) => debug!(error = %e, "mdns browse did not restart; keeping the old one"),
                }
            }
        }
    }
    stop(&daemon, fullname.as_deref()).await;
}

/// Registers (or re-registers) the advert; its full name when accepted.
fn register(daemon: &ServiceDaemon, advert: &Advert) -> Option<String> {
    match advert.service().and_then(|s| {
        let name = s.get_fullname().to_string();
        daemon.register(s).map(|()| name)
    }) {
        Ok(name) => Some(name),
        Err(e) => {
            warn!(error = %e, "cannot advertise this node over mdns; it can still find others");
            None
        }
    }
}

fn on_event(shared: &Shared, me: &Advert, event: ServiceEvent) {
    match event {
        ServiceEvent::ServiceResolved(found) => on_resolved(shared, me, &found),
        ServiceEvent::ServiceRemoved(_, fullname) if shared.discovered.remove(&fullname) => {
            info!(instance = %fullname, "mdns peer went away; no longer a seed");
        }
        _ => {}
    }
}

fn on_resolved(shared: &Shared, me: &Advert, found: &ResolvedService) {
    let id = found.get_property_val_str("id").unwrap_or_default();
    if id == me.id || found.get_fullname().starts_with(&format!("{}.", me.id)) {
        return;
    }
    let tls = found.get_property_val_str("tls") == Some("1");
    if tls != me.tls {
        debug!(peer = %id, peer_tls = tls, "mdns peer skipped: its tls setting differs from ours");
        return;
    }
    let addrs = dial_addrs(
        found
            .get_addresses()
            .iter()
            .map(mdns_sd::ScopedIp::to_ip_addr),
        found.get_port(),
    );
    if addrs.is_empty() {
        debug!(peer = %id, "mdns peer has no usable address yet");
        return;
    }
    let fullname = found.get_fullname();
    if shared
        .discovered
        .insert(fullname, addrs.clone(), Instant::now())
    {
        shared.metrics.mdns_discovered.inc();
        info!(
            peer = %id,
            addrs = ?addrs,
            remote = found.get_property_val_str("remote").unwrap_or("?"),
            groups = found.get_property_val_str("groups").unwrap_or(""),
            "peer discovered over mdns"
        );
    }
}

/// Unregisters (so peers forget this node now), then stops the daemon,
/// waiting a bounded time for each.
async fn stop(daemon: &ServiceDaemon, fullname: Option<&str>) {
    if let Some(name) = fullname {
        if let Ok(done) = daemon.unregister(name) {
            let _ = tokio::time::timeout(STOP_WAIT, done.recv_async()).await;
        }
    }
    match daemon.shutdown() {
        Ok(done) => {
            let _ = tokio::time::timeout(STOP_WAIT, done.recv_async()).await;
        }
        Err(e) => debug!(error = %e, "mdns daemon already stopped"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_addrs_prefer_routable_ipv4_then_ipv6_then_loopback() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mixed = [
            ip("fe80::1"),
            ip("2001:db8::1"),
            ip("10.0.0.2"),
            ip("127.0.0.1"),
        ];
        assert_eq!(dial_addrs(mixed, 50051), ["10.0.0.2:50051"]);
        let v6 = [ip("fe80::1"), ip("2001:db8::1"), ip("127.0.0.1")];
        assert_eq!(dial_addrs(v6, 7), ["[2001:db8::1]:7"]);
        assert_eq!(dial_addrs([ip("127.0.0.1")], 7), ["127.0.0.1:7"]);
        assert!(dial_addrs([ip("fe80::1"), ip("169.254.1.1")], 7).is_empty());
    }

    #[test]
    fn groups_txt_keeps_whole_names_within_one_txt_string() {
        assert_eq!(groups_txt(&["a".into(), "b".into()]), "a,b");
        let many: Vec<String> = (0..100).map(|i| format!("group-{i:03}")).collect();
        let txt = groups_txt(&many);
        assert!(txt.len() <= MAX_GROUPS_TXT, "{}", txt.len());
        assert!(txt.split(',').all(|g| many.contains(&g.to_string())));
    }

    #[test]
    fn host_label_is_a_dns_label() {
        assert_eq!(host_label("iarnet-0a1b"), "iarnet-0a1b.local.");
        assert_eq!(host_label("n_1.x"), "n-1-x.local.");
    }

    #[tokio::test(start_paused = true)]
    async fn discovered_addresses_are_forgotten_on_removal_or_after_the_ttl() {
        let d = Discovered::default();
        let t0 = Instant::now();
        assert!(d.insert("a", vec!["10.0.0.1:1".into()], t0));
        assert!(!d.insert("a", vec!["10.0.0.1:1".into()], t0));
        assert!(d.insert("b", vec!["10.0.0.2:1".into(), "10.0.0.1:1".into()], t0));
        d.changed().await; // a change since the last wait is not lost
        assert_eq!(d.addrs(), ["10.0.0.1:1", "10.0.0.2:1"]);
        assert!(d.remove("b") && !d.remove("b"));
        assert_eq!(d.addrs(), ["10.0.0.1:1"]);
        assert!(d
            .expire(t0 + Duration::from_secs(9), Duration::from_secs(10))
            .is_empty());
        assert_eq!(
            d.expire(t0 + Duration::from_secs(10), Duration::from_secs(10)),
            ["a"]
        );
        assert!(d.addrs().is_empty());
    }
}
