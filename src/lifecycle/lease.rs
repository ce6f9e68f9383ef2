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
use crate::resource::{LeaseState, LeaseTerms, LeaseView};

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
    #[error("the lease's epoch is {current}, not {given}: it was granted again since, and the holder of epoch {given} lost it")]
    Fenced { current: u64, given: u64 },
    #[error("the lease expired at {} and its deployment was stopped; deploy again for a new lease", rfc3339(*at_ms))]
    Expired { at_ms: WallMs },
    #[error("the lease was released; deploy again for a new lease")]
    Released,
    #[error(
        "the lease was renewed {max} times already, its max_renewals; deploy again for a new lease"
    )]
    MaxRenewals { max: u32 },
}

fn rfc3339(ms: WallMs) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
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
        let ttl_ms = terms.ttl_ms;
        Lease {
            holder: holder.to_string(),
            terms,
            epoch,
            acquired_ms: now,
            renewed_ms: None,
            expires_ms: now.saturating_add(ttl_ms),
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

    /// Refuses a holder whose epoch is not the current one (None: any).
    pub fn fence(&self, epoch: Option<u64>) -> Result<(), LeaseError> {
        match epoch {
            Some(given) if given != self.epoch => Err(LeaseError::Fenced {
                current: self.epoch,
                given,
            }),
            _ => Ok(()),
        }
    }

    /// Seed 004's name for where the lease stands: `LEASED` while active,
    /// `RELEASING` once released or expired until its container is gone
    /// (`stopped`), then `TERMINATED`.
    pub fn seed_state(&self, stopped: bool) -> &'static str {
        match (self.state, stopped) {
            (LeaseState::Active, _) => "LEASED",
            (_, false) => "RELEASING",
            (_, true) => "TERMINATED",
        }
    }

    /// The lease as the owner answers for it at `now`.
    pub fn view(&self, now: WallMs, stopped: bool) -> LeaseView {
        LeaseView {
            holder: self.holder.clone(),
            terms: self.terms.clone(),
            epoch: self.epoch,
            acquired_ms: self.acquired_ms,
            renewed_ms: self.renewed_ms,
            expires_ms: self.expires_ms,
            remaining_ms: match self.state {
                LeaseState::Active => self.expires_ms.saturating_sub(now),
                _ => 0,
            },
            renewals: self.renewals,
            transitions: self.transitions,
            state: self.state,
            seed_state: self.seed_state(stopped).to_string(),
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
            holder: String::new(),
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
        assert_eq!(l.seed_state(false), "RELEASING");
        assert_eq!(l.seed_state(true), "TERMINATED");
        assert_eq!(l.view(now, true).remaining_ms, 0);
    }

    #[test]
    fn a_renewal_after_expiry_or_release_is_refused() {
        let mut l = Lease::grant("h", terms(false, None), 1, 0, 0);
        assert!(matches!(l.renew(1_000), Err(LeaseError::Expired { .. })));
        let mut l = Lease::grant("h", terms(false, None), 1, 0, 0);
        l.release().unwrap();
        assert_eq!(l.renew(10), Err(LeaseError::Released));
        assert_eq!(l.release(), Err(LeaseError::Released));
    }

    #[test]
    fn a_stale_epoch_is_fenced_off() {
        let l = Lease::grant("h", terms(false, None), 9, 2, 0);
        assert_eq!(l.fence(None), Ok(()));
        assert_eq!(l.fence(Some(9)), Ok(()));
        let e = l.fence(Some(8)).unwrap_err();
        assert_eq!(
            e,
            LeaseError::Fenced {
                current: 9,
                given: 8
            }
        );
        assert!(e.to_string().contains("lost it"), "{e}");
        let v = l.view(400, false);
        assert_eq!((v.remaining_ms, v.epoch, v.transitions), (600, 9, 2));
        assert_eq!(v.seed_state, "LEASED");
    }
}
