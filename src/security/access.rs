//! Allow and deny lists by node id and by network.

use std::net::IpAddr;

use crate::config::AccessConfig;

/// Why a peer is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    Node(String),
    Network(IpAddr),
}

impl Denied {
    pub fn message(&self) -> String {
        match self {
            Denied::Node(id) => format!(
                "node {id:?} is not allowed by this node's access.allow_nodes / access.deny_nodes"
            ),
            Denied::Network(ip) => format!(
                "address {ip} is not allowed by this node's access.allow_networks / access.deny_networks"
            ),
        }
    }
}

impl AccessConfig {
    /// Deny wins; a non-empty allow list admits only what it names.
    pub fn check_node(&self, id: &str) -> Result<(), Denied> {
        let denied = self.deny_nodes.iter().any(|d| d == id)
            || (!self.allow_nodes.is_empty() && !self.allow_nodes.iter().any(|a| a == id));
        if denied {
            Err(Denied::Node(id.to_string()))
        } else {
            Ok(())
        }
    }

    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Denied> {
        // An IPv4 peer on a dual-stack socket arrives as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let denied = self.deny_networks.iter().any(|n| n.contains(&ip))
            || (!self.allow_networks.is_empty()
                && !self.allow_networks.iter().any(|n| n.contains(&ip)));
        if denied {
            Err(Denied::Network(ip))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists() -> AccessConfig {
        AccessConfig {
            allow_nodes: vec!["a".into(), "b".into()],
            deny_nodes: vec!["b".into()],
            allow_networks: vec!["10.0.0.0/8".parse().unwrap()],
            deny_networks: vec!["10.9.0.0/16".parse().unwrap()],
        }
    }

    #[test]
    fn deny_wins_and_allow_lists_are_exclusive() {
        let a = lists();
        assert!(a.check_node("a").is_ok());
        assert_eq!(a.check_node("b"), Err(Denied::Node("b".into())));
        assert!(a.check_node("c").is_err());
        assert!(a.check_ip("10.1.2.3".parse().unwrap()).is_ok());
        assert!(a.check_ip("10.9.2.3".parse().unwrap()).is_err());
        assert!(a.check_ip("192.168.1.1".parse().unwrap()).is_err());
        assert!(a.check_ip("::ffff:10.1.2.3".parse().unwrap()).is_ok());
    }

    #[test]
    fn empty_lists_admit_everyone() {
        let a = AccessConfig::default();
        assert!(a.is_open());
        assert!(a.check_node("anyone").is_ok());
        assert!(a.check_ip("8.8.8.8".parse().unwrap()).is_ok());
    }
}
