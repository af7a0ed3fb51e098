//! Redis over TLS (`rediss://`): the CA bundle, client certificates (mTLS), the server-name
//! check and its one explicit relaxation, and what a plain URL on a TLS port says. The
//! contract suite runs over TLS too (`store_contract`, `redis_tls` cases).

use std::path::Path;
use std::time::Duration;

use gatehouse::store::{
    ClientCertificate, OwnershipStore, RedisOptions, RedisStore, StoreError, TlsOptions,
};
use serde_json::json;

use crate::common::tls::{ClientAuth, TlsRedis, certs};
use crate::common::{Backend, TestApp};

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("a test certificate file")
}

fn trusting(ca: &Path) -> TlsOptions {
    TlsOptions {
        ca: Some(read(ca)),
        ..TlsOptions::default()
    }
}

fn with_client_certificate(tls: TlsOptions) -> TlsOptions {
    let (cert, key) = certs().client();
    TlsOptions {
        client: Some(ClientCertificate {
            cert: read(&cert),
            key: read(&key),
        }),
        ..tls
    }
}

/// A ping through a store on `url` with `tls`.
async fn ping(url: String, tls: TlsOptions) -> Result<(), StoreError> {
    let store = RedisStore::connect(&RedisOptions {
        tls,
        connections: 1,
        timeout: Duration::from_secs(2),
        ..RedisOptions::new(url)
    })?;
    store.ping().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_ca_works_a_wrong_one_and_a_plain_url_are_refused_clearly() {
    let Some(redis) = TlsRedis::start(ClientAuth::Optional) else {
        return;
    };
    let ca = certs().ca();
    ping(redis.url(), trusting(&ca))
        .await
        .expect("the right CA");
    ping(redis.url(), with_client_certificate(trusting(&ca)))
        .await
        .expect("the right CA with a client certificate");

    let wrong = ping(redis.url(), trusting(&certs().other_ca())).await;
    let Err(StoreError::Unavailable(why)) = wrong else {
        panic!("a server certificate from another CA was accepted: {wrong:?}");
    };
    assert!(why.to_lowercase().contains("certificate"), "{why}");

    // Without a CA file the system's roots apply: the test CA is not one of them.
    let system = ping(redis.url(), TlsOptions::default()).await;
    assert!(system.is_err(), "the test CA is not a system root");

    let plain = format!("redis://127.0.0.1:{}", redis.tls_port);
    let Err(StoreError::Unavailable(why)) = ping(plain, TlsOptions::default()).await else {
        panic!("a plain connection to a TLS port succeeded");
    };
    assert!(
        why.contains("rediss://"),
        "the message says what to do: {why}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_requires_client_certificates_gets_one_or_refuses() {
    let Some(redis) = TlsRedis::start(ClientAuth::Required) else {
        return;
    };
    let ca = certs().ca();
    assert!(
        ping(redis.url(), trusting(&ca)).await.is_err(),
        "no client certificate"
    );
    ping(redis.url(), with_client_certificate(trusting(&ca)))
        .await
        .expect("mTLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_name_is_checked_unless_explicitly_relaxed() {
    let Some(redis) = TlsRedis::start(ClientAuth::Optional) else {
        return;
    };
    // The certificate names `localhost` only.
    let by_ip = format!("rediss://127.0.0.1:{}", redis.tls_port);
    let ca = certs().ca();
    assert!(
        ping(by_ip.clone(), trusting(&ca)).await.is_err(),
        "name mismatch"
    );
    let relaxed = TlsOptions {
        skip_hostname_check: true,
        ..trusting(&ca)
    };
    ping(by_ip.clone(), relaxed)
        .await
        .expect("name check skipped");
    // The chain is still checked when the name is not.
    let other = TlsOptions {
        skip_hostname_check: true,
        ..trusting(&certs().other_ca())
    };
    assert!(ping(by_ip, other).await.is_err(), "chain still verified");
}

/// A whole instance on `rediss://`: ready, and checks decide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_serves_over_tls() {
    let Some(backend) = Backend::redis_tls() else {
        return;
    };
    let app = TestApp::spawn(&backend, &[]).await;
    let ready = app.call(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, 200, "{ready:?}");
    app.claim("s1", "alice").await;
    let alice = app.user("alice");
    let reply = app.validate(&alice, json!({ "session_id": "s1" })).await;
    assert_eq!(reply.body["reason"], "owner", "{reply:?}");
}
