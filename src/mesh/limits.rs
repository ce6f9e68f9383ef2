//! Bounds on everything a peer sends, checked before the gossip core sees
//! it: requests a node serves and replies it receives, on the server and
//! the client side alike. [`MAX_MESSAGE`] bounds the total; the rest bound
//! each part, so no single field can make a node keep (and re-gossip)
//! something huge. Errors name the field.

use std::fmt;

use crate::proto::peer::{
    ExchangeRequest, ExchangeResponse, Member, MemberDigest, NodeMeta, ProviderCallRequest,
    ProviderExchangeRequest, ProviderExchangeResponse, ProviderInfo, ProviderSet,
};

/// Largest peer message a node accepts or sends (the core's soft cap on
/// gossip is far below; CallProvider payloads are specs and log pages).
pub const MAX_MESSAGE: usize = 4 << 20;

/// Ids, names and addresses.
pub const MAX_NAME: usize = 256;
/// Suspecters carried on one member record (confirmations need three).
pub const MAX_SUSPECTERS: usize = 16;
/// Addresses in `known_peers`.
pub const MAX_KNOWN_PEERS: usize = 4096;
/// Member records or digest entries in one message.
pub const MAX_ENTRIES: usize = 65_536;
/// Buckets of a digest (the protocol uses up to 4,096).
pub const MAX_BUCKETS: usize = 4096;
/// Providers one node may advertise.
pub const MAX_PROVIDERS: usize = 256;
/// Labels per provider, and the length of each key and value.
pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL: usize = 253;
/// Models, group memberships and rosters one node may carry.
pub const MAX_SWARM_ITEMS: usize = 64;
/// Pools one node carries (it carries every pool of the mesh).
pub const MAX_POOLS: usize = 1024;
/// Node ids in one roster or one pool.
pub const MAX_SWARM_NODES: usize = 4096;

/// A part of a peer message over its bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitError {
    pub field: String,
    pub what: String,
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.what)
    }
}

impl std::error::Error for LimitError {}

/// A peer sent something out of bounds: its request, not this node, is wrong.
impl From<LimitError> for tonic::Status {
    fn from(e: LimitError) -> tonic::Status {
        tonic::Status::invalid_argument(e.to_string())
    }
}

type Checked = Result<(), LimitError>;

fn too(field: &str, what: String) -> LimitError {
    LimitError {
        field: field.to_string(),
        what,
    }
}

fn text(field: &str, value: &str) -> Checked {
    if value.len() > MAX_NAME {
        return Err(too(
            field,
            format!("{} bytes long; the limit is {MAX_NAME}", value.len()),
        ));
    }
    Ok(())
}

fn count(field: &str, n: usize, max: usize) -> Checked {
    if n > max {
        return Err(too(field, format!("{n} entries; the limit is {max}")));
    }
    Ok(())
}

fn member(field: &str, m: &Member) -> Checked {
    text(&format!("{field}.id"), &m.id)?;
    text(&format!("{field}.name"), &m.name)?;
    text(&format!("{field}.addr"), &m.addr)?;
    count(
        &format!("{field}.suspected_by"),
        m.suspected_by.len(),
        MAX_SUSPECTERS,
    )?;
    for (i, s) in m.suspected_by.iter().enumerate() {
        text(&format!("{field}.suspected_by[{i}]"), s)?;
    }
    Ok(())
}

fn digests(field: &str, entries: &[MemberDigest]) -> Checked {
    count(field, entries.len(), MAX_ENTRIES)?;
    for (i, d) in entries.iter().enumerate() {
        text(&format!("{field}[{i}].id"), &d.id)?;
    }
    Ok(())
}

fn common(
    known_peers: &[String],
    sender: Option<&Member>,
    members: &[Member],
    digest: Option<&crate::proto::peer::Digest>,
    refute: Option<&MemberDigest>,
) -> Checked {
    count("known_peers", known_peers.len(), MAX_KNOWN_PEERS)?;
    for (i, p) in known_peers.iter().enumerate() {
        text(&format!("known_peers[{i}]"), p)?;
    }
    if let Some(s) = sender {
        member("sender", s)?;
    }
    count("members", members.len(), MAX_ENTRIES)?;
    for (i, m) in members.iter().enumerate() {
        member(&format!("members[{i}]"), m)?;
    }
    if let Some(d) = digest {
        count("digest.buckets", d.buckets.len(), MAX_BUCKETS)?;
        digests("digest.entries", &d.entries)?;
    }
    if let Some(r) = refute {
        text("refute.id", &r.id)?;
    }
    Ok(())
}

pub fn exchange_request(r: &ExchangeRequest) -> Checked {
    common(
        &r.known_peers,
        r.sender.as_ref(),
        &r.members,
        r.digest.as_ref(),
        r.refute.as_ref(),
    )
}

pub fn exchange_response(r: &ExchangeResponse) -> Checked {
    common(
        &r.known_peers,
        r.sender.as_ref(),
        &r.members,
        r.digest.as_ref(),
        r.refute.as_ref(),
    )?;
    count("bucket_hashes", r.bucket_hashes.len(), MAX_BUCKETS)
}

fn provider(field: &str, p: &ProviderInfo) -> Checked {
    for (name, v) in [
        ("id", &p.id),
        ("name", &p.name),
        ("type", &p.r#type),
        ("host", &p.host),
        ("owner_id", &p.owner_id),
    ] {
        text(&format!("{field}.{name}"), v)?;
    }
    labels(&format!("{field}.labels"), &p.labels)
}

fn labels(field: &str, map: &std::collections::HashMap<String, String>) -> Checked {
    count(field, map.len(), MAX_LABELS)?;
    for (k, v) in map {
        if k.len() > MAX_LABEL || v.len() > MAX_LABEL {
            return Err(too(
                &format!("{field}[{:?}]", k.chars().take(32).collect::<String>()),
                format!("keys and values are at most {MAX_LABEL} bytes"),
            ));
        }
    }
    Ok(())
}

fn providers(field: &str, list: &[ProviderInfo]) -> Checked {
    count(field, list.len(), MAX_ENTRIES)?;
    for (i, p) in list.iter().enumerate() {
        provider(&format!("{field}[{i}]"), p)?;
    }
    Ok(())
}

fn sets(list: &[ProviderSet]) -> Checked {
    count("sets", list.len(), MAX_ENTRIES)?;
    for (i, s) in list.iter().enumerate() {
        text(&format!("sets[{i}].owner_id"), &s.owner_id)?;
        count(
            &format!("sets[{i}].providers"),
            s.providers.len(),
            MAX_PROVIDERS,
        )?;
        for (j, p) in s.providers.iter().enumerate() {
            provider(&format!("sets[{i}].providers[{j}]"), p)?;
        }
        if let Some(m) = &s.meta {
            meta(&format!("sets[{i}].meta"), m)?;
        }
    }
    Ok(())
}

fn texts(field: &str, list: &[String], max: usize) -> Checked {
    count(field, list.len(), max)?;
    for (i, t) in list.iter().enumerate() {
        text(&format!("{field}[{i}]"), t)?;
    }
    Ok(())
}

fn meta(field: &str, m: &NodeMeta) -> Checked {
    texts(&format!("{field}.models"), &m.models, MAX_SWARM_ITEMS)?;
    count(&format!("{field}.groups"), m.groups.len(), MAX_SWARM_ITEMS)?;
    for (i, g) in m.groups.iter().enumerate() {
        text(&format!("{field}.groups[{i}].group"), &g.group)?;
    }
    count(
        &format!("{field}.rosters"),
        m.rosters.len(),
        MAX_SWARM_ITEMS,
    )?;
    for (i, r) in m.rosters.iter().enumerate() {
        let f = format!("{field}.rosters[{i}]");
        text(&format!("{f}.group"), &r.group)?;
        text(&format!("{f}.leader"), &r.leader)?;
        texts(&format!("{f}.members"), &r.members, MAX_SWARM_NODES)?;
    }
    count(&format!("{field}.pools"), m.pools.len(), MAX_POOLS)?;
    for (i, p) in m.pools.iter().enumerate() {
        let f = format!("{field}.pools[{i}]");
        for t in [&p.name, &p.writer, &p.created_by, &p.description] {
            text(&f, t)?;
        }
        texts(&format!("{f}.nodes"), &p.nodes, MAX_SWARM_NODES)?;
        labels(&format!("{f}.selector"), &p.selector)?;
    }
    Ok(())
}

pub fn provider_request(r: &ProviderExchangeRequest) -> Checked {
    providers("providers", &r.providers)?;
    sets(&r.sets)?;
    digests("wants", &r.wants)?;
    text("sender_id", &r.sender_id)
}

pub fn provider_response(r: &ProviderExchangeResponse) -> Checked {
    providers("providers", &r.providers)?;
    sets(&r.sets)
}

/// The envelope of a CallProvider request (its payload is decoded and
/// validated by the provider operation it names).
pub fn provider_call(r: &ProviderCallRequest) -> Checked {
    text("caller_id", &r.caller_id)?;
    text("provider_id", &r.provider_id)?;
    text("method", &r.method)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversize_parts_are_named() {
        let mut r = ExchangeRequest::default();
        r.members.push(Member {
            id: "a".into(),
            addr: "x".repeat(MAX_NAME + 1),
            ..Default::default()
        });
        let e = tonic::Status::from(exchange_request(&r).unwrap_err());
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().starts_with("members[0].addr:"), "{e:?}");

        let mut p = ProviderInfo::default();
        for i in 0..=MAX_LABELS {
            p.labels.insert(format!("k{i}"), "v".into());
        }
        let r = ProviderExchangeRequest {
            sets: vec![ProviderSet {
                providers: vec![p],
                ..Default::default()
            }],
            ..Default::default()
        };
        let e = provider_request(&r).unwrap_err();
        assert!(
            e.to_string().starts_with("sets[0].providers[0].labels:"),
            "{e:?}"
        );
    }

    #[test]
    fn ordinary_messages_pass() {
        let r = ExchangeRequest {
            known_peers: vec!["10.0.0.1:50051".into()],
            members: vec![Member {
                id: "n".into(),
                addr: "10.0.0.1:50051".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        exchange_request(&r).unwrap();
        provider_response(&ProviderExchangeResponse::default()).unwrap();
    }
}
