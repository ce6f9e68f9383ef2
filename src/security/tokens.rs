//! Bearer tokens for management calls, compared in constant time.

use subtle::ConstantTimeEq;

use crate::config::Token;

/// The configured tokens; empty leaves management calls open.
#[derive(Debug, Clone, Default)]
pub struct Tokens(Vec<Token>);

/// Why a call carries no valid token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Missing,
    Malformed,
    Unknown,
}

impl TokenError {
    pub fn message(self) -> &'static str {
        match self {
            TokenError::Missing => "this node requires a token: send `authorization: Bearer <secret>` (iarnet CLI: --token or IARNET_TOKEN)",
            TokenError::Malformed => "the authorization header must be `Bearer <secret>`",
            TokenError::Unknown => "the token is not valid on this node (check auth.tokens / auth.token_file)",
        }
    }
}

impl Tokens {
    pub fn new(tokens: Vec<Token>) -> Tokens {
        Tokens(tokens)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The name of the token in an `authorization` header value.
    pub fn check(&self, header: Option<&[u8]>) -> Result<String, TokenError> {
        let header = header.ok_or(TokenError::Missing)?;
        let secret = header
            .strip_prefix(b"Bearer ")
            .or_else(|| header.strip_prefix(b"bearer "))
            .ok_or(TokenError::Malformed)?;
        // Every token is compared, so the time taken does not tell which
        // one (or how much of one) matched.
        let mut found = None;
        for t in &self.0 {
            if bool::from(t.secret.as_bytes().ct_eq(secret)) {
                found = Some(t.name.clone());
            }
        }
        found.ok_or(TokenError::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(vec![
            Token {
                name: "ci".into(),
                secret: "0123456789abcdef".into(),
            },
            Token {
                name: "ops".into(),
                secret: "fedcba9876543210".into(),
            },
        ])
    }

    #[test]
    fn a_valid_token_names_its_holder() {
        let t = tokens();
        assert_eq!(t.check(Some(b"Bearer fedcba9876543210")).unwrap(), "ops");
        assert_eq!(t.check(Some(b"bearer 0123456789abcdef")).unwrap(), "ci");
    }

    #[test]
    fn missing_malformed_and_wrong_tokens_are_told_apart() {
        let t = tokens();
        assert_eq!(t.check(None), Err(TokenError::Missing));
        assert_eq!(t.check(Some(b"Basic abc")), Err(TokenError::Malformed));
        assert_eq!(
            t.check(Some(b"Bearer 0123456789abcdeX")),
            Err(TokenError::Unknown)
        );
        assert_eq!(
            t.check(Some(b"Bearer 0123456789abcdef0")),
            Err(TokenError::Unknown)
        );
        assert_eq!(t.check(Some(b"Bearer ")), Err(TokenError::Unknown));
    }
}
