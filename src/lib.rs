//! gatehouse: session-ownership checks for a chat platform, and their gradual enforcement.
//!
//! A stateless HTTP service over Redis (or an embedded in-memory store) that answers "may user
//! U use chat session S?" ([`gatekeeper`]), under an enforcement mode that operators move from
//! DISABLED through LOG_ONLY to ENFORCED ([`enforcement`]). The same decision protects any axum
//! route through [`middleware::OwnershipLayer`]. The contract is `DESIGN.md`; the layout:
//!
//! - [`records`]: what is stored (audit events, settings and history, backfill jobs), at the bottom.
//! - [`decision`]: the pure decision function (DESIGN §2).
//! - [`gatekeeper`]: mode resolution + owner lookup + decision, shared by every entry point.
//! - [`store`]: the store port and its Redis and in-memory adapters.
//! - [`forward_auth`]: the auth subrequest of reverse proxies and its route table.
//! - [`enforcement`], [`rollout`], [`sessions`], [`validate`]: capabilities with their routes.
//! - [`audit`]: the audit stream writer and queries; [`metrics`]: Prometheus metrics.
//! - [`backfill`]: legacy sessions get a default owner; verify and roll back.
//! - [`cli`]: the command line (admin REST clients, operator tools on Redis).
//! - [`auth`]: JWT principals; [`http`]: the web toolkit (state, errors, extractors, the
//!   server loop); [`app`]: the router, assembled once; [`server`]: start-up and shutdown;
//!   [`tasks`]: the background tasks it owns. The README's Layout section says what may call
//!   what (`../shared/tools/module-cycles src` finds no cycle).

pub mod app;
pub mod audit;
pub mod auth;
pub mod backfill;
pub mod cli;
pub mod config;
pub mod decision;
pub mod enforcement;
pub mod forward_auth;
pub mod gatekeeper;
pub mod http;
pub mod instances;
pub mod metrics;
pub mod middleware;
pub mod migrate;
pub mod records;
pub mod rollout;
pub mod server;
pub mod session_id;
pub mod sessions;
pub mod stats;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod throttle;
pub mod timestamp;
pub mod validate;
