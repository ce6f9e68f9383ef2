//! The `discovery.*` keys (finding peers on the LAN with multicast DNS) and
//! `models` (the AI models this node serves or can run).

use super::hint;
use super::parser::Parser;
use super::Key;

pub(super) const MDNS: Key = Key::new(
    "discovery.mdns",
    "auto",
    "find peers on the LAN with mDNS: auto (on when initial_peers is empty), on, off",
)
.env("IARNET_MDNS");
pub(super) const MDNS_EXCLUDE: Key = Key::new(
    "discovery.mdns_exclude",
    "docker0,veth*,br-*,tun*,tap*,virbr*,cni*,flannel*",
    "interfaces mDNS never uses (a trailing * matches a prefix)",
)
.env("IARNET_MDNS_EXCLUDE")
.list();
pub(super) const MODELS: Key = Key::new(
    "models",
    "",
    "AI models this node serves or can run; deploys may require one (requires_model)",
)
.env("IARNET_MODELS")
.list();

pub(super) const KEYS: &[Key] = &[MDNS, MDNS_EXCLUDE, MODELS];

/// When mDNS discovery runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MdnsMode {
    /// On when no `initial_peers` are configured.
    Auto,
    On,
    Off,
}

/// LAN discovery settings. Each field names its key; defaults are in [`KEYS`].
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveryConfig {
    /// `discovery.mdns`.
    pub mdns: MdnsMode,
    /// `discovery.mdns_exclude`: interface names or `prefix*` patterns.
    pub mdns_exclude: Vec<String>,
}

impl DiscoveryConfig {
    /// Whether mDNS runs, given the configured seeds.
    pub fn mdns_enabled(&self, initial_peers: &[String]) -> bool {
        match self.mdns {
            MdnsMode::On => true,
            MdnsMode::Off => false,
            MdnsMode::Auto => initial_peers.is_empty(),
        }
    }

    /// Whether mDNS may use the interface called `name`.
    pub fn interface_allowed(&self, name: &str) -> bool {
        !self.mdns_exclude.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == p,
        })
    }
}

/// A model name: what `requires_model` matches, exactly.
pub fn valid_model(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

impl Parser<'_> {
    pub(super) fn discovery(&mut self) -> DiscoveryConfig {
        let text = self.scalar(&MDNS);
        let mdns = match text.to_ascii_lowercase().as_str() {
            "auto" => MdnsMode::Auto,
            "on" | "true" => MdnsMode::On,
            "off" | "false" => MdnsMode::Off,
            other => {
                let hint = hint::did_you_mean(other, ["auto", "on", "off"]);
                self.fail(MDNS.name, &text, format!("expected auto, on or off{hint}"));
                MdnsMode::Auto
            }
        };
        let mut mdns_exclude = Vec::new();
        for pattern in self.list(&MDNS_EXCLUDE) {
            let bare = pattern.strip_suffix('*').unwrap_or(&pattern);
            if bare.is_empty() || bare.contains('*') || bare.len() > 15 {
                self.fail(
                    MDNS_EXCLUDE.name,
                    &pattern,
                    "each entry is an interface name (at most 15 characters) or a prefix ending in *, e.g. \"veth*\"",
                );
            } else {
                mdns_exclude.push(pattern);
            }
        }
        DiscoveryConfig { mdns, mdns_exclude }
    }

    pub(super) fn models(&mut self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for model in self.list(&MODELS) {
            if valid_model(&model) {
                if !out.contains(&model) {
                    out.push(model);
                }
            } else {
                self.fail(
                    MODELS.name,
                    &model,
                    "each model is 1-63 letters, digits, '-', '_', '.' or ':', e.g. \"llama3:8b\"",
                );
            }
        }
        out
    }
}
