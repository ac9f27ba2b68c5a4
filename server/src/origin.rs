//! Browser safety: a web page the user happens to have open must not be able to use the
//! server, which (without tokens) trusts everything that reaches it from this machine.
//!
//! Three rules, checked on every request before its credentials:
//!
//! - **Cross-site requests are refused.** Browsers say where a request comes from
//!   (`Sec-Fetch-Site`; `Origin` on every POST, also from a plain `<form>` and a `no-cors`
//!   `fetch`). Unless that is the server's own origin, or a host given to
//!   [`Access::allow_host`], only a top-level navigation (`GET`, `Sec-Fetch-Mode: navigate`:
//!   following a link to the dashboard) is answered. Clients that are not browsers send
//!   neither header and are not concerned.
//! - **A tokenless server answers only the names of this machine** (DNS rebinding: a page
//!   whose own host name has been pointed at 127.0.0.1 is same-origin to itself, but its
//!   requests carry its name in `Host`). Loopback names and IP literals are answered, other
//!   names only when given to [`Access::allow_host`]; with tokens a request without one is
//!   refused anyway.
//! - (in [`crate::request`]) MLflow's JSON routes take only `application/json` bodies, which
//!   no page can send to another origin without the CORS preflight this server never grants.

use std::net::IpAddr;

use axum::http::request::Parts;
use axum::http::{Method, header};

use crate::auth::Access;
use crate::error::ApiError;

/// Refuses a request that a page of another site made, or that names a host this server is
/// not (see the module's documentation).
pub(crate) fn check(parts: &Parts, access: &Access) -> Result<(), ApiError> {
    let text = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let host = text(header::HOST.as_str()).or_else(|| parts.uri.authority().map(|a| a.as_str()));
    let tokenless = !parts.headers.contains_key(header::AUTHORIZATION);
    let loopback_mode = !access.has_tokens() && !access.allows_anonymous();
    if tokenless
        && (loopback_mode || !access.allowed_hosts().is_empty())
        && let Some(host) = host.filter(|h| !host_allowed(h, access))
    {
        return Err(ApiError::Forbidden(format!(
            "this server is not {host:?}: a request naming another host is refused (a page \
             of another site can reach a local server by pointing its own name at it); \
             reach it as localhost or by its address, or start it with --allowed-host {}",
            host_part(host)
        )));
    }
    let navigation = matches!(parts.method, Method::GET | Method::HEAD)
        && text("sec-fetch-mode") == Some("navigate");
    let origin = text(header::ORIGIN.as_str());
    let own = |origin: &str| {
        let Some(authority) = origin_authority(origin) else {
            return false; // "null": a sandboxed frame, a file:// page, a redirect across sites
        };
        let forwarded = text("x-forwarded-host");
        [host, forwarded]
            .into_iter()
            .flatten()
            .any(|h| h.eq_ignore_ascii_case(authority))
            || allowed_by_list(authority, access)
    };
    let cross_site = matches!(text("sec-fetch-site"), Some("cross-site" | "same-site"));
    let foreign_origin = origin.is_some_and(|o| !own(o));
    if (cross_site || foreign_origin) && !navigation && !origin.is_some_and(own) {
        return Err(ApiError::Forbidden(format!(
            "a request from {} is refused: runql serve answers its own dashboard and clients \
             that are not browsers; to let pages of that site call it, start it with \
             --allowed-host {}",
            origin.unwrap_or("another site"),
            origin.and_then(origin_authority).unwrap_or("HOST")
        )));
    }
    Ok(())
}

/// `localhost:5000` of `http://localhost:5000` (`None` for `null` or what is not an origin).
fn origin_authority(origin: &str) -> Option<&str> {
    let (_, rest) = origin.split_once("://")?;
    let authority = rest.split('/').next()?;
    (!authority.is_empty()).then_some(authority)
}

/// The host of `host[:port]` (IPv6 literals in brackets kept whole).
fn host_part(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .split_once(']')
            .map(|(h, _)| &authority[..h.len() + 1])
            .unwrap_or(authority);
    }
    authority.split(':').next().unwrap_or(authority)
}

/// Whether a `Host` header names this machine, or a host the operator allowed.
fn host_allowed(authority: &str, access: &Access) -> bool {
    let host = host_part(authority).to_ascii_lowercase();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host.ends_with(".localhost")
        || bare.parse::<IpAddr>().is_ok()
        || allowed_by_list(authority, access)
}

/// Whether `authority` (`host[:port]`) matches an `--allowed-host` entry: a bare name matches
/// any port, `name:port` that port only.
fn allowed_by_list(authority: &str, access: &Access) -> bool {
    let authority = authority.to_ascii_lowercase();
    access.allowed_hosts().iter().any(|allowed| {
        if allowed.contains(':') && !allowed.starts_with('[') || allowed.contains("]:") {
            *allowed == authority
        } else {
            allowed == host_part(&authority)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Scope;
    use axum::http::Request;

    fn parts(method: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder().method(method).uri("/api/sql");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn refused(method: &str, headers: &[(&str, &str)], access: &Access) -> bool {
        check(&parts(method, headers), access).is_err()
    }

    #[test]
    fn pages_of_other_sites_are_refused() {
        let a = Access::loopback_only();
        let host = ("host", "127.0.0.1:5000");
        // The dashboard itself, and clients that are not browsers.
        assert!(!refused("POST", &[host], &a));
        assert!(!refused(
            "POST",
            &[
                host,
                ("origin", "http://127.0.0.1:5000"),
                ("sec-fetch-site", "same-origin")
            ],
            &a
        ));
        // A no-cors fetch or a form from another site (with or without Sec-Fetch headers).
        assert!(refused(
            "POST",
            &[
                host,
                ("origin", "http://evil.example"),
                ("sec-fetch-site", "cross-site")
            ],
            &a
        ));
        assert!(refused(
            "POST",
            &[host, ("origin", "http://evil.example")],
            &a
        ));
        assert!(refused("POST", &[host, ("origin", "null")], &a));
        assert!(refused(
            "POST",
            &[host, ("sec-fetch-site", "cross-site")],
            &a
        ));
        // Another port of the same machine is another origin (same-site for browsers).
        assert!(refused(
            "POST",
            &[
                host,
                ("origin", "http://127.0.0.1:8888"),
                ("sec-fetch-site", "same-site")
            ],
            &a
        ));
        // Reads embedded by another page (img, script, fetch) are refused too ...
        assert!(refused(
            "GET",
            &[
                host,
                ("sec-fetch-site", "cross-site"),
                ("sec-fetch-mode", "no-cors")
            ],
            &a
        ));
        // ... but following a link to the dashboard is not.
        assert!(!refused(
            "GET",
            &[
                host,
                ("sec-fetch-site", "cross-site"),
                ("sec-fetch-mode", "navigate")
            ],
            &a
        ));
        // A form posted across sites navigates, and is still refused.
        assert!(refused(
            "POST",
            &[
                host,
                ("origin", "http://evil.example"),
                ("sec-fetch-site", "cross-site"),
                ("sec-fetch-mode", "navigate")
            ],
            &a
        ));
        // Allowed hosts may call it.
        let allowed = Access::loopback_only().allow_host("notebooks.team:8888");
        assert!(!refused(
            "POST",
            &[
                host,
                ("origin", "https://notebooks.team:8888"),
                ("sec-fetch-site", "cross-site")
            ],
            &allowed
        ));
        assert!(refused(
            "POST",
            &[host, ("origin", "https://notebooks.team:9999")],
            &allowed
        ));
    }

    #[test]
    fn behind_a_proxy_the_forwarded_host_is_the_origin() {
        let a = Access::default().token("w".repeat(16), Scope::Write);
        let headers = [
            ("host", "127.0.0.1:5000"),
            ("x-forwarded-host", "runql.team.example"),
            ("origin", "https://runql.team.example"),
            ("authorization", "Bearer wwwwwwwwwwwwwwww"),
        ];
        assert!(!refused("POST", &headers, &a));
    }

    #[test]
    fn a_tokenless_server_answers_only_its_own_names() {
        let a = Access::loopback_only();
        for ok in [
            "localhost:5000",
            "127.0.0.1:5000",
            "[::1]:5000",
            "app.localhost",
            "10.1.2.3",
            "LOCALHOST",
        ] {
            assert!(!refused("GET", &[("host", ok)], &a), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:5000",
            "localhost.evil.example",
        ] {
            assert!(refused("GET", &[("host", bad)], &a), "{bad}");
        }
        let named = Access::loopback_only().allow_host("gpu-box");
        assert!(!refused("GET", &[("host", "gpu-box:5000")], &named));
        assert!(!refused("GET", &[("host", "GPU-BOX")], &named));
        // Anonymous servers answer any name unless hosts are listed; token holders any name.
        let open = Access::loopback_only().anonymous(true);
        assert!(!refused("GET", &[("host", "gpu-box:5000")], &open));
        let listed = Access::loopback_only()
            .anonymous(true)
            .allow_host("gpu-box");
        assert!(refused("GET", &[("host", "evil.example")], &listed));
        let tokens = Access::default().token("w".repeat(16), Scope::Write);
        assert!(!refused(
            "GET",
            &[
                ("host", "runql.team"),
                ("authorization", "Bearer wwwwwwwwwwwwwwww")
            ],
            &tokens
        ));
    }
}
