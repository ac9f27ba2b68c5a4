//! Who may do what: bearer tokens with a read or a write scope, and loopback-only access when
//! no token is configured (unless the operator says `--allow-anonymous`: then anyone who can
//! reach the port may write — or, beside tokens, read).
//!
//! Tokens are kept as BLAKE3 hashes and compared in constant time, every one of them, so how
//! long a refusal takes tells nothing about how close a guess was.

use std::net::SocketAddr;
use std::path::Path;

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Write,
}

/// The server's access rules.
#[derive(Clone, Default)]
pub struct Access {
    tokens: Vec<(blake3::Hash, Scope)>,
    allow_anonymous: bool,
    allowed_hosts: Vec<String>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("tokens", &self.tokens.len())
            .field("allow_anonymous", &self.allow_anonymous)
            .field("allowed_hosts", &self.allowed_hosts)
            .finish()
    }
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

    /// Anyone who can reach the port (`--allow-anonymous`): with write access when no token
    /// is configured, read access beside tokens.
    pub fn anonymous(mut self, allow: bool) -> Access {
        self.allow_anonymous = allow;
        self
    }

    /// Adds a token.
    pub fn token(mut self, token: impl AsRef<str>, scope: Scope) -> Access {
        self.add(token.as_ref(), scope);
        self
    }

    fn add(&mut self, token: &str, scope: Scope) {
        let hash = blake3::hash(token.as_bytes());
        match self.tokens.iter_mut().find(|(h, _)| *h == hash) {
            Some(entry) => entry.1 = entry.1.max(scope),
            None => self.tokens.push((hash, scope)),
        }
    }

    /// A host name (or `host:port`) browsers may reach the server by, beside loopback names
    /// (`--allowed-host`, for a server behind a proxy or reached by its machine's name): the
    /// `Host` a tokenless request names, and the origin of a page that calls the API.
    pub fn allow_host(mut self, host: impl Into<String>) -> Access {
        self.allowed_hosts.push(host.into().to_ascii_lowercase());
        self
    }

    /// The hosts given to [`Access::allow_host`].
    pub fn allowed_hosts(&self) -> &[String] {
        &self.allowed_hosts
    }

    /// Whether requests without a token are answered from other machines.
    pub fn allows_anonymous(&self) -> bool {
        self.allow_anonymous
    }

    /// The scope of a presented token, comparing it with every configured one in constant
    /// time.
    fn scope_of(&self, token: &str) -> Option<Scope> {
        let hash = blake3::hash(token.as_bytes());
        let mut found = None;
        for (h, scope) in &self.tokens {
            // blake3::Hash's equality is constant-time.
            if *h == hash {
                found = Some(*scope);
            }
        }
        found
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
            self.add(token, scope);
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
            let token = bearer(value).ok_or_else(|| {
                Denied::Unauthenticated("use `Authorization: Bearer TOKEN`".into())
            })?;
            return match self.scope_of(token) {
                Some(scope) if scope >= needed => Ok(()),
                Some(_) => Err(Denied::Forbidden(
                    "this token may only read; writing needs a write token".into(),
                )),
                None => Err(Denied::Unauthenticated("unknown token".into())),
            };
        }
        if self.allow_anonymous {
            if !self.has_tokens() || needed == Scope::Read {
                return Ok(());
            }
            return Err(Denied::Unauthenticated(
                "anonymous clients may only read from this server; writing needs a write token \
                 (`Authorization: Bearer TOKEN`; MLflow clients: set MLFLOW_TRACKING_TOKEN)"
                    .into(),
            ));
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

/// The token of an `Authorization` header's value: the scheme is case-insensitive (RFC 9110).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
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
        // The scheme is case-insensitive; surrounding space does not matter.
        let w = "w".repeat(16);
        for header in [
            format!("BEARER {w}"),
            format!("bearer  {w} "),
            format!("BeArEr {w}"),
        ] {
            assert!(
                a.check(peer("10.0.0.2"), Some(&header), Scope::Write)
                    .is_ok(),
                "{header}"
            );
        }
        assert!(
            a.check(peer("10.0.0.2"), Some(&format!("Basic {w}")), Scope::Read)
                .is_err()
        );
        assert!(
            a.check(peer("10.0.0.2"), Some("Bearer "), Scope::Read)
                .is_err()
        );
    }

    #[test]
    fn anonymous_beside_tokens_may_only_read() {
        let w = "w".repeat(16);
        let a = Access::default().token(&w, Scope::Write).anonymous(true);
        assert!(a.check(peer("10.0.0.2"), None, Scope::Read).is_ok());
        assert!(matches!(
            a.check(peer("10.0.0.2"), None, Scope::Write),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(
            a.check(peer("10.0.0.2"), Some(&format!("Bearer {w}")), Scope::Write)
                .is_ok()
        );
        // A token given twice keeps its larger scope.
        let twice = Access::default()
            .token(&w, Scope::Write)
            .token(&w, Scope::Read);
        assert!(
            twice
                .check(peer("10.0.0.2"), Some(&format!("Bearer {w}")), Scope::Write)
                .is_ok()
        );
    }
}
