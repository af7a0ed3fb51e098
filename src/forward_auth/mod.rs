//! `/v1/forward-auth`: the auth subrequest of reverse proxies (DESIGN §3).
//!
//! A proxy asks before forwarding a request: gatehouse reads the original method and URI from
//! the proxy's convention, finds the route (and so the endpoint name and the session id) in the
//! [route table](matcher), authenticates the caller (bearer token or a configured cookie) and
//! answers with the decision:
//!
//! | answer | when | proxy does |
//! | --- | --- | --- |
//! | 200 | allowed, would-deny (LOG_ONLY), or an unprotected URI | forwards the request |
//! | 401 | a protected URI without valid credentials | refuses (401) |
//! | 403 | denied (ENFORCED), or unmatched with `unmatched = deny` | refuses (403) |
//! | 503 | the owner could not be read under ENFORCED | fails closed |
//! | 400 | no original URI, two proxy conventions or a header twice (`ambiguous-request`, audited), a refused path (`refused-uri`, audited), an invalid session id | fails closed |
//!
//! Every answer carries all six `X-Gatehouse-*` headers (`User`, `Session`, `Endpoint`, `Mode`,
//! `Decision`, `Reason`), empty where none applies (an unmatched URI has only a decision and a
//! reason): a proxy that copies them onto the upstream request overwrites what a client sent.
//!
//! | convention (`GATEHOUSE_FORWARD_AUTH_STYLE`) | method from | URI from |
//! | --- | --- | --- |
//! | `nginx` (`auth_request`) | `X-Original-Method` | `X-Original-URI` |
//! | `traefik` (ForwardAuth), `caddy` (`forward_auth`) | `X-Forwarded-Method` | `X-Forwarded-Uri` |
//! | `envoy` (`ext_authz`, `path_prefix: /v1/forward-auth`) | the request's own | the path after the prefix |
//! | `auto` (default) | the one convention present; two, or a header twice: 400 | |
//!
//! The same check is offered over gRPC as Envoy's `envoy.service.auth.v3.Authorization/Check`
//! on `GATEHOUSE_GRPC_LISTEN` ([`grpc`]): both transports build a [`check::Question`] and
//! call [`check::answer`].
//!
//! See [`original`] for why, and [`matcher`] for what a path must look like. The audit
//! `client_ip` is the forwarded address only from a trusted proxy
//! (`GATEHOUSE_TRUSTED_PROXIES`), read from the header the style's proxy sets (nginx:
//! `X-Real-IP`; traefik, caddy, envoy: `X-Forwarded-For`).

pub mod check;
#[cfg(test)]
mod differential;
pub mod grpc;
pub mod matcher;
pub mod original;
pub mod paths;
pub(crate) mod routes;

pub use self::matcher::{DEFAULT_ROUTES, RouteTable};
pub use self::original::{PATH, Style};
pub use self::routes::routes;

/// What to answer for a URI that no route matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmatched {
    /// 200: the URI is not protected (the default).
    Allow,
    /// 403: everything behind the proxy must be routed.
    Deny,
}

/// What a CORS preflight gets (`GATEHOUSE_FORWARD_AUTH_PREFLIGHT`): an `OPTIONS` request with
/// `Origin` and `Access-Control-Request-Method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preflight {
    /// Decided like any request, as method `OPTIONS` (the default). Browsers send no
    /// credentials on a preflight, so one to a protected route is a 401 and the proxy must
    /// answer preflights itself: nothing reaches a protected route unchecked.
    #[default]
    Check,
    /// 200 without a check (`reason: preflight`, no identity), on any URI that passes the path
    /// checks: the backend answers CORS. Only for backends whose `OPTIONS` handling serves no
    /// session data; the proxy must pass `Origin` and `Access-Control-Request-Method`.
    Allow,
    /// 403 (`reason: preflight`): the proxy or nobody answers preflights.
    Deny,
}

/// Forward-auth settings.
#[derive(Debug, Clone)]
pub struct ForwardAuth {
    /// The route table.
    pub routes: RouteTable,
    /// What unmatched URIs get.
    pub unmatched: Unmatched,
    /// A cookie that may carry the token when there is no `Authorization` header.
    pub cookie: Option<String>,
    /// Which proxy convention carries the original request.
    pub style: Style,
    /// What CORS preflights get.
    pub preflight: Preflight,
}

impl Default for ForwardAuth {
    fn default() -> Self {
        Self {
            routes: RouteTable::parse(DEFAULT_ROUTES).unwrap_or_else(|_| unreachable!()),
            unmatched: Unmatched::Allow,
            cookie: None,
            style: Style::Auto,
            preflight: Preflight::Check,
        }
    }
}
