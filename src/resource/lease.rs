//! A deployment's lease as the resource plane speaks of it (seed 004): the
//! terms a deploy asks for, checked field by field, and the view the owner
//! answers with. The state machine that grants, renews and expires leases
//! is sans-IO, in [`lifecycle::lease`](crate::lifecycle::lease).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::ResourceError;

/// The shortest and longest lease a deploy may ask for.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(1);
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(30 * 86_400);

/// What a deploy asks for: its resources come back when the lease runs out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseTerms {
    pub ttl_ms: u64,
    /// The owner renews by itself when the lease runs out, up to `max_renewals`.
    pub auto_renew: bool,
    /// Renewals allowed, by the holder or automatic; None is no limit.
    pub max_renewals: Option<u32>,
    /// Who holds it; the node that accepts the deploy (its home) when the
    /// client names nobody.
    #[serde(default)]
    pub holder: String,
}

impl LeaseTerms {
    /// The lease fields of a Deploy request, each error naming its field.
    /// No `lease_ttl` is no lease; the other fields then make no sense.
    pub fn from_fields(
        ttl: &str,
        auto_renew: bool,
        max_renewals: Option<u32>,
        holder: &str,
    ) -> Result<Option<LeaseTerms>, ResourceError> {
        let ttl = ttl.trim();
        if ttl.is_empty() {
            let stray = if max_renewals.is_some() {
                Some("max_renewals")
            } else if auto_renew {
                Some("auto_renew")
            } else if !holder.is_empty() {
                Some("lease_holder")
            } else {
                None
            };
            return match stray {
                Some(field) => Err(ResourceError::invalid(
                    field,
                    "is set without a lease: give lease_ttl (e.g. \"10m\") too",
                )),
                None => Ok(None),
            };
        }
        let d = humantime::parse_duration(ttl).map_err(|e| {
            ResourceError::invalid(
                "lease_ttl",
                format!("{ttl:?} is not a duration ({e}): write e.g. \"10m\" or \"90s\""),
            )
        })?;
        if !(MIN_LEASE_TTL..=MAX_LEASE_TTL).contains(&d) {
            return Err(ResourceError::invalid(
                "lease_ttl",
                format!("{ttl:?} is out of range: give 1s to 30d (e.g. \"10m\")"),
            ));
        }
        if holder.len() > 256 || holder.chars().any(char::is_control) {
            return Err(ResourceError::invalid(
                "lease_holder",
                "must be at most 256 printable characters",
            ));
        }
        Ok(Some(LeaseTerms {
            ttl_ms: d.as_millis() as u64,
            auto_renew,
            max_renewals,
            holder: holder.to_string(),
        }))
    }

    /// The TTL as people write it ("10m").
    pub fn ttl_text(&self) -> String {
        humantime::format_duration(Duration::from_millis(self.ttl_ms)).to_string()
    }
}

/// Where a lease stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    Active,
    Released,
    Expired,
}

impl LeaseState {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Active => "active",
            LeaseState::Released => "released",
            LeaseState::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> LeaseState {
        match s {
            "released" => LeaseState::Released,
            "expired" => LeaseState::Expired,
            _ => LeaseState::Active,
        }
    }
}

/// A lease as its owner answers for it. Instants are the owner's wall
/// clock; `remaining_ms` was measured there, so a reader on another node
/// needs no clock of the owner's to know how long is left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    pub holder: String,
    pub terms: LeaseTerms,
    /// Raised by the owner on every new grant: a holder that sees a larger
    /// epoch than the one it was given lost the lease in between.
    pub epoch: u64,
    pub acquired_ms: u64,
    pub renewed_ms: Option<u64>,
    pub expires_ms: u64,
    /// Until expiry when the owner answered; 0 once it ended.
    pub remaining_ms: u64,
    pub renewals: u32,
    /// Grants of this deployment's lease before this one.
    pub transitions: u32,
    pub state: LeaseState,
    /// Seed 004's name for it: LEASED, RELEASING or TERMINATED.
    pub seed_state: String,
}

impl LeaseView {
    /// Why the deployment ended, when its lease ended it.
    pub fn ended_reason(&self) -> Option<String> {
        let renewals = match self.renewals {
            0 => String::new(),
            1 => " after 1 renewal".to_string(),
            n => format!(" after {n} renewals"),
        };
        match self.state {
            LeaseState::Active => None,
            LeaseState::Expired => Some(format!(
                "its lease (ttl {}) expired{renewals}; deploy again for a new lease",
                self.terms.ttl_text()
            )),
            LeaseState::Released => Some(format!("its lease was released{renewals}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_fields_are_checked_by_name() {
        assert_eq!(LeaseTerms::from_fields("", false, None, ""), Ok(None));
        let t = LeaseTerms::from_fields("10m", true, Some(3), "")
            .unwrap()
            .unwrap();
        assert_eq!(
            (t.ttl_ms, t.auto_renew, t.max_renewals),
            (600_000, true, Some(3))
        );
        assert_eq!(t.ttl_text(), "10m");
        let field = |r: Result<Option<LeaseTerms>, ResourceError>| match r {
            Err(ResourceError::InvalidSpec { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        };
        assert_eq!(
            field(LeaseTerms::from_fields("", false, Some(2), "")),
            "max_renewals"
        );
        assert_eq!(
            field(LeaseTerms::from_fields("", true, None, "")),
            "auto_renew"
        );
        assert_eq!(
            field(LeaseTerms::from_fields("-5m", false, None, "")),
            "lease_ttl"
        );
        assert_eq!(
            field(LeaseTerms::from_fields("500ms", false, None, "")),
            "lease_ttl"
        );
        assert_eq!(
            field(LeaseTerms::from_fields("400d", false, None, "")),
            "lease_ttl"
        );
        assert_eq!(
            field(LeaseTerms::from_fields("soon", false, None, "")),
            "lease_ttl"
        );
    }
}
