//! End to end through real proxies (issue 14, acceptance 1): nginx, Debian's Caddy 2.6.2, a
//! current Caddy 2.11 and Traefik 3, each running its recipe from `examples/proxies/` exactly as
//! shipped, with gatehouse started in the `GATEHOUSE_FORWARD_AUTH_STYLE` the recipe names, under
//! ENFORCED, in front of a recording upstream. For each proxy:
//!
//! - the owner reaches the upstream, which sees gatehouse's six `X-Gatehouse-*` values;
//! - another user gets 403 and the upstream is never reached; no token is a 401;
//! - header precedence: a client's own `X-Original-URI` / `X-Forwarded-Uri` (and methods)
//!   naming a session it owns never get another user's session served;
//! - client-sent `X-Gatehouse-*` (all six, each twice) never reach the upstream, on a checked
//!   request and on an unprotected (unmatched) URI, and no placeholder text does either;
//! - the audited client address is the client's, not one it claims in `X-Forwarded-For` /
//!   `X-Real-IP` (gatehouse trusts the proxy's address);
//! - gatehouse down: the proxy fails closed, the upstream is not reached.
//!
//! Every check also runs with gatehouse in `auto` style (an operator who did not set it): the
//! recipes' own stripping must hold then too. Path spellings are in `proxy_paths.rs`. One
//! proxy process per test (every check runs against the same start); each test prints how long
//! its proxy took to start and to run the checks. The harness is `tests/common/proxies.rs`.

use crate::common::proxies::Kind;
use std::time::Duration;

use reqwest::Method;

use crate::common::eventually;
use crate::common::stage::{CLIENT_IP, Failures, Stage, send};

/// A request carrying every identity header twice, with values a client would like to be
/// believed.
fn spoofed(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    let mut request = request;
    // Underscore spellings too: CGI-style backends (WSGI, PHP, Rack) read `X_Gatehouse_User`,
    // `X-Gatehouse_User` and `X_Gatehouse-User` as the same `HTTP_X_GATEHOUSE_USER`.
    for name in [
        "X-Gatehouse-User",
        "x-gatehouse-user",
        "X_Gatehouse_User",
        "X-Gatehouse_User",
        "x_gatehouse-user",
    ] {
        request = request.header(name, "root-spoof");
    }
    for (name, value) in [
        ("X-Gatehouse-Session", "s2-spoof"),
        ("X-Gatehouse-Endpoint", "chat.spoof"),
        ("X-Gatehouse-Mode", "DISABLED-spoof"),
        ("X-Gatehouse-Decision", "allow-spoof"),
        ("X-Gatehouse-Reason", "admin-spoof"),
    ] {
        request = request.header(name, value).header(name, value);
    }
    request
}

/// A 403 or a 5xx: what a proxy that fails closed answers.
fn refused(status: u16) -> bool {
    status == 403 || (500..600).contains(&status)
}

/// Runs every check through `kind` with gatehouse in the recipe's style, or in `auto` (the
/// default, for an operator who did not set it: the recipes' own stripping must hold then too).
async fn recipe_holds(kind: Kind, recipe_style: bool) {
    let style = (!recipe_style).then_some("auto");
    let Some(mut stage) = Stage::set(kind, style).await else {
        return;
    };
    let (alice, bob) = (stage.alice.clone(), stage.bob.clone());
    let (alice, bob) = (&alice, &bob);
    let upstream = &stage.upstream;
    let http = stage.client();
    let base = stage.proxy.base.clone();
    let get = |path: &str| http.get(format!("{base}{path}"));
    let mut failures = Failures::new(kind);
    let (s1, s2) = (
        "/api/chat/sessions/s1/messages",
        "/api/chat/sessions/s2/messages",
    );

    // The owner reaches the upstream with gatehouse's identity headers.
    let owner = send(upstream, get(s1).bearer_auth(alice)).await;
    failures.check(owner.status == 200, || {
        format!("the owner got {}", owner.status)
    });
    let reached_uri = owner.reached.as_ref().map(|seen| seen.uri.clone());
    failures.check(reached_uri.as_deref() == Some(s1), || {
        format!("the owner's request reached the upstream as {reached_uri:?}")
    });
    failures.identity(
        owner.reached,
        ["alice", "s1", "chat.messages", "ENFORCED", "allow", "owner"],
    );

    // Another user, and no token, are refused before the upstream.
    let other = send(upstream, get(s1).bearer_auth(bob)).await;
    failures.check(other.status == 403 && other.reached.is_none(), || {
        format!(
            "another user got {} (reached the upstream: {})",
            other.status,
            other.reached.is_some()
        )
    });
    let anonymous = send(upstream, get("/api/chat/sessions/s1/export")).await;
    failures.check(
        anonymous.status == 401 && anonymous.reached.is_none(),
        || {
            format!(
                "no token got {} (reached the upstream: {})",
                anonymous.status,
                anonymous.reached.is_some()
            )
        },
    );

    // Header precedence: bob asks for alice's s1 and names his own s2 in every header a
    // convention reads. The proxy's own value must decide: 403, never served.
    let attacks: [&[(&str, &str)]; 6] = [
        &[("X-Original-URI", s2)],
        &[("X-Forwarded-Uri", s2)],
        &[("X-Original-URI", s2), ("X-Forwarded-Uri", s2)],
        &[("X-Original-URI", s2), ("X-Original-URI", s2)],
        &[("X-Forwarded-Uri", s2), ("X-Forwarded-Uri", s2)],
        &[
            ("X-Original-Method", "GET"),
            ("X-Original-URI", s2),
            ("X-Forwarded-Method", "GET"),
            ("X-Forwarded-Uri", s2),
        ],
    ];
    for headers in attacks {
        let mut request = get(s1).bearer_auth(bob);
        for (header, value) in headers {
            request = request.header(*header, *value);
        }
        let attack = send(upstream, request).await;
        failures.check(attack.status == 403 && attack.reached.is_none(), || {
            format!(
                "bob with {headers:?} for alice's s1 got {} (served: {})",
                attack.status,
                attack.reached.is_some()
            )
        });
    }
    // The other way round: what is served is what was decided (bob's own s2, not the s1 his
    // headers name).
    let reverse = send(
        upstream,
        get(s2)
            .bearer_auth(bob)
            .header("X-Original-URI", s1)
            .header("X-Forwarded-Uri", s1),
    )
    .await;
    failures.check(reverse.status == 200, || {
        format!(
            "bob naming s1 in headers for his own s2 got {}",
            reverse.status
        )
    });
    failures.identity(
        reverse.reached,
        ["bob", "s2", "chat.messages", "ENFORCED", "allow", "owner"],
    );

    // Spoofed identity headers on a checked request: the upstream sees gatehouse's.
    let checked = send(
        upstream,
        spoofed(get("/api/chat/sessions/s1/export")).bearer_auth(alice),
    )
    .await;
    failures.check(checked.status == 200, || {
        format!("the owner with spoofed headers got {}", checked.status)
    });
    failures.identity(
        checked.reached,
        ["alice", "s1", "chat.export", "ENFORCED", "allow", "owner"],
    );

    // ... and on an unprotected URI (no route matches, allowed without a check), with and
    // without a token: nothing identifies anyone.
    for token in [None, Some(bob)] {
        let mut request = spoofed(get("/api/chat/sessions?limit=5"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let unprotected = send(upstream, request).await;
        failures.check(unprotected.status == 200, || {
            format!("an unprotected URI got {}", unprotected.status)
        });
        failures.identity(
            unprotected.reached,
            ["", "", "", "", "allow", "unprotected"],
        );
    }

    // The audit's client address is the client's, whatever it claims: gatehouse trusts the
    // proxy, so the recipe must append to (or replace) X-Forwarded-For, not pass the client's.
    let carol = stage.app().user("carol");
    let claimed = send(
        upstream,
        get(s1)
            .bearer_auth(&carol)
            .header("X-Forwarded-For", "203.0.113.9")
            .header("X-Real-IP", "203.0.113.9"),
    )
    .await;
    failures.check(claimed.status == 403, || {
        format!("carol got {} for alice's session", claimed.status)
    });
    let app = stage.app();
    let entry = eventually(Duration::from_secs(5), "carol's audit entry", || async {
        let reply = app
            .call(
                Method::GET,
                "/v1/audit?user=carol&decision=deny",
                Some(&app.admin()),
                None,
            )
            .await;
        reply.body["entries"].as_array()?.first().cloned()
    })
    .await;
    failures.check(entry["client_ip"] == CLIENT_IP.to_string(), || {
        format!(
            "carol's client address was audited as {} (she connected from {CLIENT_IP} and \
             claimed 203.0.113.9)",
            entry["client_ip"]
        )
    });

    // No placeholder text anywhere the upstream looked.
    for seen in upstream.seen() {
        for (header, value) in &seen.headers {
            failures.check(!value.contains("{http.") && !value.contains("{rp."), || {
                format!("{} {header}: placeholder text {value:?}", seen.uri)
            });
        }
    }

    // gatehouse down: the proxy fails closed, for a checked and an unprotected URI.
    stage.report("checks");
    stage.stop_gatehouse().await;
    let upstream = &stage.upstream;
    for request in [
        get(s1).bearer_auth(alice),
        spoofed(get("/api/chat/sessions")),
    ] {
        let down = send(upstream, request).await;
        failures.check(refused(down.status) && down.reached.is_none(), || {
            format!(
                "gatehouse down: got {} (served: {})",
                down.status,
                down.reached.is_some()
            )
        });
    }

    failures.finish(&stage.proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_recipe_holds() {
    recipe_holds(Kind::Nginx, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_recipe_holds_in_auto_style() {
    recipe_holds(Kind::Nginx, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_debian_recipe_holds() {
    recipe_holds(Kind::CaddyDebian, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_debian_recipe_holds_in_auto_style() {
    recipe_holds(Kind::CaddyDebian, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_current_recipe_holds() {
    recipe_holds(Kind::CaddyCurrent, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_current_recipe_holds_in_auto_style() {
    recipe_holds(Kind::CaddyCurrent, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_recipe_holds() {
    recipe_holds(Kind::Traefik, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_recipe_holds_in_auto_style() {
    recipe_holds(Kind::Traefik, false).await;
}
