//! The bearer token every front end checks (gRPC metadata, HTTP headers,
//! the metrics endpoint), compared one way, and held so that it never
//! shows in a `Debug` or a log line.

use std::sync::Arc;

/// A bearer token: never empty, and `***` wherever it is printed.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Token(Arc<str>);

impl Token {
    /// The token's text, to compare against.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the token is empty: every client would need to send no secret at all")]
pub(crate) struct EmptyToken;

impl std::str::FromStr for Token {
    type Err = EmptyToken;
    fn from_str(s: &str) -> Result<Self, EmptyToken> {
        if s.trim().is_empty() {
            return Err(EmptyToken);
        }
        Ok(Token(Arc::from(s)))
    }
}

/// Whether an `authorization` value is `Bearer <token>`, compared in
/// constant time.
pub(crate) fn bearer_matches(authorization: Option<&str>, token: &str) -> bool {
    authorization
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_matches() {
        assert!(bearer_matches(Some("Bearer s3cret"), "s3cret"));
        for wrong in [
            None,
            Some("s3cret"),
            Some("Bearer s3cre"),
            Some("bearer s3cret"),
            Some("Bearer s3cret "),
        ] {
            assert!(!bearer_matches(wrong, "s3cret"), "{wrong:?}");
        }
    }

    #[test]
    fn a_token_is_never_empty_and_never_printed() {
        assert_eq!("".parse::<Token>(), Err(EmptyToken));
        assert_eq!("  ".parse::<Token>(), Err(EmptyToken));
        let t: Token = "s3cret".parse().unwrap();
        assert_eq!(t.expose(), "s3cret");
        assert_eq!(
            format!("{t:?} {:?}", Some(&t)),
            "Token(***) Some(Token(***))"
        );
    }
}
