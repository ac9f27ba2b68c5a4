//! Who may do what: bearer tokens with a read or a write scope, and loopback-only access when
//! no token is configured (unless the operator says `--allow-anonymous`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Write,
}

/// The server's access rules.
#[derive(Debug, Clone, Default)]
pub struct Access {
    tokens: HashMap<String, Scope>,
    allow_anonymous: bool,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No or unknown credentials (401).
    Unauthenticated(String),
    /// Known token, too small a scope (403).
    Forbidden(String),
}

impl Access {
    /// Anyone on this machine; nobody else (the default without tokens).
    pub fn loopback_only() -> Access {
        Access::default()
    }

    /// Anyone who can reach the port, with write access (`--allow-anonymous`).
    pub fn anonymous(mut self, allow: bool) -> Access {
        self.allow_anonymous = allow;
        self
    }

    /// Adds a token.
    pub fn token(mut self, token: impl Into<String>, scope: Scope) -> Access {
        self.tokens.insert(token.into(), scope);
        self
    }

    /// Reads a tokens file: one `read TOKEN` or `write TOKEN` per line; `#` starts a comment.
    pub fn tokens_file(mut self, path: &Path) -> Result<Access, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read tokens file {}: {e}", path.display()))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (scope, token) = line.split_once(char::is_whitespace).ok_or_else(|| {
                format!(
                    "{}:{}: expected `read TOKEN` or `write TOKEN`",
                    path.display(),
                    i + 1
                )
            })?;
            let scope = match scope {
                "read" => Scope::Read,
                "write" => Scope::Write,
                other => {
                    return Err(format!(
                        "{}:{}: unknown scope {other:?} (read or write)",
                        path.display(),
                        i + 1
                    ));
                }
            };
            let token = token.trim();
            if token.len() < 16 {
                return Err(format!(
                    "{}:{}: tokens must be at least 16 characters",
                    path.display(),
                    i + 1
                ));
            }
            self.tokens.insert(token.to_string(), scope);
        }
        Ok(self)
    }

    /// Whether any token is configured.
    pub fn has_tokens(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Decides a request from `peer` carrying `authorization` (the header's value) that needs
    /// `needed`.
    pub fn check(
        &self,
        peer: Option<SocketAddr>,
        authorization: Option<&str>,
        needed: Scope,
    ) -> Result<(), Denied> {
        if let Some(value) = authorization {
            let token = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .ok_or_else(|| Denied::Unauthenticated("use `Authorization: Bearer TOKEN`".into()))?
                .trim();
            return match self.tokens.get(token) {
                Some(scope) if *scope >= needed => Ok(()),
                Some(_) => Err(Denied::Forbidden(
                    "this token may only read; writing needs a write token".into(),
                )),
                None => Err(Denied::Unauthenticated("unknown token".into())),
            };
        }
        if self.allow_anonymous {
            return Ok(());
        }
        if self.has_tokens() {
            return Err(Denied::Unauthenticated(
                "this server needs a token: send `Authorization: Bearer TOKEN` \
                 (MLflow clients: set MLFLOW_TRACKING_TOKEN)"
                    .into(),
            ));
        }
        match peer {
            Some(p) if p.ip().is_loopback() => Ok(()),
            _ => Err(Denied::Unauthenticated(
                "without tokens this server only answers this machine; start it with --token \
                 or --allow-anonymous to serve others"
                    .into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: &str) -> Option<SocketAddr> {
        Some(
            format!("{ip}:5555")
                .parse()
                .unwrap_or_else(|e| panic!("{e}")),
        )
    }

    #[test]
    fn without_tokens_only_loopback_is_served() {
        let a = Access::loopback_only();
        assert!(a.check(peer("127.0.0.1"), None, Scope::Write).is_ok());
        assert!(a.check(peer("[::1]"), None, Scope::Write).is_ok());
        assert!(matches!(
            a.check(peer("10.0.0.2"), None, Scope::Read),
            Err(Denied::Unauthenticated(_))
        ));
        let open = Access::loopback_only().anonymous(true);
        assert!(open.check(peer("10.0.0.2"), None, Scope::Write).is_ok());
    }

    #[test]
    fn tokens_carry_scopes() {
        let a = Access::default()
            .token("r".repeat(16), Scope::Read)
            .token("w".repeat(16), Scope::Write);
        let bearer = |t: &str| format!("Bearer {t}");
        let (r, w) = (bearer(&"r".repeat(16)), bearer(&"w".repeat(16)));
        assert!(a.check(peer("10.0.0.2"), Some(&r), Scope::Read).is_ok());
        assert!(matches!(
            a.check(peer("10.0.0.2"), Some(&r), Scope::Write),
            Err(Denied::Forbidden(_))
        ));
        assert!(a.check(peer("10.0.0.2"), Some(&w), Scope::Write).is_ok());
        assert!(matches!(
            a.check(peer("127.0.0.1"), None, Scope::Read),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(
            a.check(peer("127.0.0.1"), Some("Bearer nope"), Scope::Read),
            Err(Denied::Unauthenticated(_))
        ));
    }
}
