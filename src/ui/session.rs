//! Dashboard sessions: the browser holds an opaque id in an HttpOnly,
//! SameSite=Strict cookie; the node keeps the token it stands for, so every
//! page and form goes through the same token check, rate limit and audit
//! name as the HTTP API. Each session carries the CSRF token its forms echo.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

/// The cookie's name, before the node's id: browsers keep cookies per host
/// (not per port), so two nodes on one host must not share one. Its path
/// is `/ui`, so the JSON API never sees it.
pub const COOKIE_PREFIX: &str = "iarnet_session_";

/// This node's cookie name (letters, digits, `-` and `_` of its id).
pub fn cookie_name(node_id: &str) -> String {
    let id: String = node_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    format!("{COOKIE_PREFIX}{id}")
}
/// How long a login lasts (the cookie's Max-Age and the node's own expiry).
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Sessions kept at most: the oldest goes first, so logins cannot grow
/// memory without bound.
const MAX_SESSIONS: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    /// The bearer token this session stands for; None on a node without tokens.
    pub token: Option<String>,
    /// The token's name, shown in the header and written to the audit log.
    pub name: String,
    pub csrf: String,
    expires: Instant,
}

impl Session {
    /// The `Authorization` value the security checks expect.
    pub fn authorization(&self) -> Option<Vec<u8>> {
        self.token
            .as_ref()
            .map(|t| format!("Bearer {t}").into_bytes())
    }

    /// A form's `_csrf` value is this session's, compared in constant time.
    pub fn csrf_matches(&self, given: &str) -> bool {
        !given.is_empty() && bool::from(self.csrf.as_bytes().ct_eq(given.as_bytes()))
    }
}

pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
    rng: SystemRandom,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            by_id: Mutex::default(),
            rng: SystemRandom::new(),
        }
    }
}

impl Sessions {
    pub fn start(&self, token: Option<String>, name: String, now: Instant) -> Session {
        let s = Session {
            id: self.random(),
            token,
            name,
            csrf: self.random(),
            expires: now + SESSION_TTL,
        };
        let mut all = self.by_id.lock().expect("sessions lock");
        if all.len() >= MAX_SESSIONS {
            all.retain(|_, s| s.expires > now);
            if all.len() >= MAX_SESSIONS {
                if let Some(oldest) = all.values().min_by_key(|s| s.expires).map(|s| s.id.clone()) {
                    all.remove(&oldest);
                }
            }
        }
        all.insert(s.id.clone(), s.clone());
        s
    }

    /// The live session with this id; an expired one is forgotten.
    pub fn get(&self, id: &str, now: Instant) -> Option<Session> {
        let mut all = self.by_id.lock().expect("sessions lock");
        match all.get(id) {
            Some(s) if s.expires > now => Some(s.clone()),
            Some(_) => {
                all.remove(id);
                None
            }
            None => None,
        }
    }

    pub fn end(&self, id: &str) {
        self.by_id.lock().expect("sessions lock").remove(id);
    }

    pub fn len(&self) -> usize {
        self.by_id.lock().expect("sessions lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// 256 random bits from the OS, as hex.
    fn random(&self) -> String {
        let mut b = [0u8; 32];
        self.rng
            .fill(&mut b)
            .expect("the OS random source works (ring::rand)");
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}

/// The session id in a `Cookie` header, if any.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `Set-Cookie` for a new session; Secure when the node serves HTTPS.
pub fn set_cookie(name: &str, s: &Session, secure: bool) -> String {
    format!(
        "{name}={}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{}",
        s.id,
        SESSION_TTL.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` that makes the browser forget the session.
pub fn clear_cookie(name: &str, secure: bool) -> String {
    format!(
        "{name}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_end() {
        let all = Sessions::default();
        let t0 = Instant::now();
        let s = all.start(Some("secret".into()), "ops".into(), t0);
        assert_eq!(s.id.len(), 64);
        assert_ne!(s.id, s.csrf);
        assert!(all.get(&s.id, t0).is_some());
        assert!(all.get(&s.id, t0 + SESSION_TTL).is_none());
        assert!(all.is_empty(), "an expired session is forgotten");
        let s = all.start(None, "anonymous".into(), t0);
        all.end(&s.id);
        assert!(all.get(&s.id, t0).is_none());
    }

    #[test]
    fn csrf_and_cookies() {
        let all = Sessions::default();
        let s = all.start(None, "anonymous".into(), Instant::now());
        assert!(s.csrf_matches(&s.csrf.clone()));
        assert!(!s.csrf_matches(""));
        assert!(!s.csrf_matches("nope"));
        let name = cookie_name("iarnet-1a2b/x");
        assert_eq!(name, "iarnet_session_iarnet-1a2bx");
        let other = cookie_name("iarnet-ffff");
        let header = format!("{other}=theirs; {name}={}; c=d", s.id);
        assert_eq!(cookie_value(&header, &name), Some(s.id.as_str()));
        assert_eq!(cookie_value(&header, &other), Some("theirs"));
        let set = set_cookie(&name, &s, true);
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
        assert!(set.ends_with("; Secure"));
        assert!(!set_cookie(&name, &s, false).contains("Secure"));
        assert!(clear_cookie(&name, false).contains("Max-Age=0"));
    }
}
