//! Black-box tests: gatehouse served on real sockets, against a real `redis-server` and the
//! embedded store. One test binary (link once); the harness is in `tests/common/`.

mod common;

#[path = "integration/audit.rs"]
mod audit;
#[path = "integration/backfill.rs"]
mod backfill;
#[path = "integration/binary.rs"]
mod binary;
#[path = "integration/cache.rs"]
mod cache;
#[path = "integration/cli.rs"]
mod cli;
#[path = "integration/cluster.rs"]
mod cluster;
#[path = "integration/connections.rs"]
mod connections;
#[path = "integration/contract.rs"]
mod contract;
#[path = "integration/credentials.rs"]
mod credentials;
#[path = "integration/dashboard.rs"]
mod dashboard;
#[path = "integration/docs.rs"]
mod docs;
#[path = "integration/enforcement.rs"]
mod enforcement;
#[path = "integration/example.rs"]
mod example;
#[path = "integration/forward_auth.rs"]
mod forward_auth;
#[path = "integration/forward_auth_grpc.rs"]
mod forward_auth_grpc;
#[path = "integration/forward_auth_paths.rs"]
mod forward_auth_paths;
#[path = "integration/grpc_recipes.rs"]
mod grpc_recipes;
#[path = "integration/identity.rs"]
mod identity;
#[path = "integration/index.rs"]
mod index;
#[path = "integration/keys.rs"]
mod keys;
#[path = "integration/metrics.rs"]
mod metrics;
#[path = "integration/monitoring.rs"]
mod monitoring;
#[path = "integration/nginx.rs"]
mod nginx;
#[path = "integration/openapi.rs"]
mod openapi;
#[path = "integration/operator.rs"]
mod operator;
#[path = "integration/outage.rs"]
mod outage;
#[path = "integration/propagation.rs"]
mod propagation;
#[path = "integration/proxies.rs"]
mod proxies;
#[path = "integration/proxy_paths.rs"]
mod proxy_paths;
#[path = "integration/redis_tls.rs"]
mod redis_tls;
#[path = "integration/rollout.rs"]
mod rollout;
#[path = "integration/sentinel.rs"]
mod sentinel;
#[path = "integration/session_ids.rs"]
mod session_ids;
#[path = "integration/sessions.rs"]
mod sessions;
#[path = "integration/settings_fallback.rs"]
mod settings_fallback;
#[path = "integration/stats.rs"]
mod stats;
#[path = "integration/store_contract.rs"]
mod store_contract;
#[path = "integration/validate.rs"]
mod validate;
