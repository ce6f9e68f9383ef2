//! A deployment's lease, sans-IO: held where the resources are, on the
//! owner's own clock, so expiry frees the resources even when the home and
//! the client are gone. No clock is compared across nodes: a holder sends
//! durations, the owner computes instants.
//!
//! States follow seed 004's machine: a leased deployment is `LEASED` while
//! active (renewals keep it there), `RELEASING` while its container stops
//! after a release or an expiry, then `TERMINATED`.

use serde::{Deserialize, Serialize};

use super::queue::WallMs;

/// What a deploy asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseTerms {
    pub ttl_ms: u64,
    /// The owner renews by itself when the lease runs out, up to `max_renewals`.
    pub auto_renew: bool,
    /// Renewals allowed, by the holder or automatic; None is no limit.
    pub max_renewals: Option<u32>,
}

/// The shortest and longest lease a deploy may ask for.
pub const MIN_TTL_MS: u64 = 1_000;
pub const MAX_TTL_MS: u64 = 30 * 86_400_000;

impl LeaseTerms {
    /// Checks the terms, naming the field at fault.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(MIN_TTL_MS..=MAX_TTL_MS).contains(&self.ttl_ms) {
            return Err((
                "lease_ttl",
                format!(
                    "{} ms is out of range: give 1s to 30d (e.g. \"10m\")",
                    self.ttl_ms
                ),
            ));
        }
        Ok(())
    }
}

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
}

/// One lease, as the owner keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Who asked (the home node, as the owner's guard named it).
    pub holder: String,
    pub terms: LeaseTerms,
    /// Raised by the owner on every new grant: a holder that sees a larger
    /// epoch than its own knows it lost the lease in between.
    pub epoch: u64,
    pub acquired_ms: WallMs,
    pub renewed_ms: Option<WallMs>,
    pub expires_ms: WallMs,
    pub renewals: u32,
    /// Grants of this deployment's lease before this one.
    pub transitions: u32,
    pub state: LeaseState,
}

/// Why a renewal was refused (FAILED_PRECONDITION at the surface).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("the lease expired at {at_ms} ms (Unix) and its deployment was stopped; deploy again for a new lease")]
    Expired { at_ms: WallMs },
    #[error("the lease was released; deploy again for a new lease")]
    Released,
    #[error(
        "the lease was renewed {max} times already, its max_renewals; deploy again for a new lease"
    )]
    MaxRenewals { max: u32 },
}

/// What `tick` decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseEvent {
    /// Renewed by the owner (auto_renew).
    AutoRenewed,
    /// Ran out: stop the deployment and free its resources.
    Expired,
}

impl Lease {
    pub fn grant(
        holder: &str,
        terms: LeaseTerms,
        epoch: u64,
        transitions: u32,
        now: WallMs,
    ) -> Lease {
        Lease {
            holder: holder.to_string(),
            terms,
            epoch,
            acquired_ms: now,
            renewed_ms: None,
            expires_ms: now.saturating_add(terms.ttl_ms),
            renewals: 0,
            transitions,
            state: LeaseState::Active,
        }
    }

    fn refused(&self) -> Option<LeaseError> {
        match self.state {
            LeaseState::Expired => Some(LeaseError::Expired {
                at_ms: self.expires_ms,
            }),
            LeaseState::Released => Some(LeaseError::Released),
            LeaseState::Active => self
                .terms
                .max_renewals
                .filter(|max| self.renewals >= *max)
                .map(|max| LeaseError::MaxRenewals { max }),
        }
    }

    /// The holder renews: one more TTL from now.
    pub fn renew(&mut self, now: WallMs) -> Result<(), LeaseError> {
        if self.state == LeaseState::Active && now >= self.expires_ms {
            // Past its expiry but not yet ticked: it is over all the same.
            self.state = LeaseState::Expired;
        }
        self.extend(now)
    }

    /// One more TTL from now, if the lease is active and has renewals left.
    fn extend(&mut self, now: WallMs) -> Result<(), LeaseError> {
        if let Some(e) = self.refused() {
            return Err(e);
        }
        self.renewals += 1;
        self.renewed_ms = Some(now);
        self.expires_ms = now.saturating_add(self.terms.ttl_ms);
        Ok(())
    }

    /// The holder gives it back; the deployment is stopped.
    pub fn release(&mut self) -> Result<(), LeaseError> {
        match self.state {
            LeaseState::Active => {
                self.state = LeaseState::Released;
                Ok(())
            }
            LeaseState::Released => Err(LeaseError::Released),
            LeaseState::Expired => Err(LeaseError::Expired {
                at_ms: self.expires_ms,
            }),
        }
    }

    /// Run out? Renews by itself when asked to and allowed.
    pub fn tick(&mut self, now: WallMs) -> Option<LeaseEvent> {
        if self.state != LeaseState::Active || now < self.expires_ms {
            return None;
        }
        if self.terms.auto_renew && self.extend(now).is_ok() {
            return Some(LeaseEvent::AutoRenewed);
        }
        self.state = LeaseState::Expired;
        Some(LeaseEvent::Expired)
    }

    /// Seed 004's name for where the lease stands.
    pub fn seed_state(&self) -> &'static str {
        match self.state {
            LeaseState::Active => "LEASED",
            LeaseState::Released | LeaseState::Expired => "RELEASING",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(auto_renew: bool, max: Option<u32>) -> LeaseTerms {
        LeaseTerms {
            ttl_ms: 1_000,
            auto_renew,
            max_renewals: max,
        }
    }

    #[test]
    fn renew_extends_until_the_limit_then_refuses_naming_it() {
        let mut l = Lease::grant("home", terms(false, Some(2)), 7, 0, 10_000);
        assert_eq!(l.expires_ms, 11_000);
        l.renew(10_500).unwrap();
        assert_eq!(l.expires_ms, 11_500);
        l.renew(11_000).unwrap();
        assert_eq!(l.renew(11_100), Err(LeaseError::MaxRenewals { max: 2 }));
        assert!(LeaseError::MaxRenewals { max: 2 }
            .to_string()
            .contains("max_renewals"));
        assert_eq!(l.tick(12_000), Some(LeaseEvent::Expired));
        assert!(matches!(l.renew(12_001), Err(LeaseError::Expired { .. })));
        assert_eq!(l.epoch, 7, "renewals keep the epoch");
    }

    #[test]
    fn auto_renew_happens_exactly_max_renewals_times() {
        let mut l = Lease::grant("home", terms(true, Some(3)), 1, 0, 0);
        let mut now = 0;
        let mut renewed = 0;
        loop {
            now += 1_000;
            match l.tick(now) {
                Some(LeaseEvent::AutoRenewed) => renewed += 1,
                Some(LeaseEvent::Expired) => break,
                None => panic!("a tick at expiry decides"),
            }
        }
        assert_eq!(renewed, 3);
        assert_eq!(l.state, LeaseState::Expired);
        assert_eq!(l.seed_state(), "RELEASING");
    }

    #[test]
    fn a_renewal_after_expiry_or_release_is_refused() {
        let mut l = Lease::grant("h", terms(false, None), 1, 0, 0);
        assert!(matches!(l.renew(1_000), Err(LeaseError::Expired { .. })));
        let mut l = Lease::grant("h", terms(false, None), 1, 0, 0);
        l.release().unwrap();
        assert_eq!(l.renew(10), Err(LeaseError::Released));
        assert_eq!(l.release(), Err(LeaseError::Released));
        assert!(LeaseTerms {
            ttl_ms: 10,
            ..terms(false, None)
        }
        .check()
        .is_err());
    }
}
