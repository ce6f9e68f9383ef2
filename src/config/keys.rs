//! The key table: every configuration key's name, environment variable,
//! shape, default and one-line doc, in one place. Each section declares its
//! keys beside its builder (`node.rs`, `gossip.rs`, …); [`SECTIONS`] gathers
//! them for the raw layers (known keys, env names, list shape, suggestions).
//! `config.yaml` and the README's reference table are checked against it.

use super::{discovery, gossip, node, resources, security};

/// One configuration key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// Dotted name as written in `config.yaml`, e.g. `gossip.interval`.
    pub name: &'static str,
    /// The `IARNET_*` variable that sets it, if any.
    pub env: Option<&'static str>,
    /// A list: a YAML sequence, or a comma-separated string in env and flags.
    pub list: bool,
    /// The value used when no layer sets it, written as `config.yaml` writes
    /// it; `""` is unset (for a list: empty).
    pub default: &'static str,
    /// What an unset value stands for when the node works it out at start
    /// (the host name, a file under `data_dir`), as the README states it.
    pub derived: Option<&'static str>,
    /// One line on what it does.
    pub doc: &'static str,
}

impl Key {
    /// A scalar key without environment variable or derived default.
    pub(super) const fn new(name: &'static str, default: &'static str, doc: &'static str) -> Key {
        Key {
            name,
            env: None,
            list: false,
            default,
            derived: None,
            doc,
        }
    }

    pub(super) const fn env(self, env: &'static str) -> Key {
        Key {
            env: Some(env),
            ..self
        }
    }

    pub(super) const fn list(self) -> Key {
        Key { list: true, ..self }
    }

    pub(super) const fn derived(self, derived: &'static str) -> Key {
        Key {
            derived: Some(derived),
            ..self
        }
    }
}

/// Every section's keys, in `config.yaml` order of concepts.
pub const SECTIONS: &[&[Key]] = &[
    node::KEYS,
    gossip::KEYS,
    resources::KEYS,
    security::KEYS,
    discovery::KEYS,
];

/// Every configuration key.
pub fn keys() -> impl Iterator<Item = &'static Key> {
    SECTIONS.iter().flat_map(|section| section.iter())
}

pub(super) fn by_name(name: &str) -> Option<&'static Key> {
    keys().find(|k| k.name == name)
}

pub(super) fn by_env(env: &str) -> Option<&'static Key> {
    keys().find(|k| k.env == Some(env))
}

/// Whether `prefix` is a section (`gossip`, `rate_limit`) holding keys.
pub(super) fn is_section(prefix: &str) -> bool {
    keys().any(|k| {
        k.name
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.'))
    })
}
