//! End-to-end tests: a real nats-server, real services and a real edge per test, driven
//! over HTTP and WebSocket like a client app. One binary, one module per area.

mod accounts;
mod analytics;
mod authz;
mod bad_input;
mod caches;
mod content;
mod feed;
mod graph;
mod idempotency;
mod interactions;
mod limits;
mod mesh;
mod messaging;
mod nats_config;
mod notifications;
mod ops;
mod persistence;
mod s3;
mod tokens;
mod up;
mod ws;
mod zero_trust;
