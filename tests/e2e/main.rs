//! squall's end-to-end tests, one binary with a module per area.
#![recursion_limit = "256"]

/// Run each listed `async fn name(backend: Backend)` as two tests,
/// `sqlite::name` and `postgres::name`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() -> anyhow::Result<()> { super::$name(squall_tests::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() -> anyhow::Result<()> { super::$name(squall_tests::Backend::Postgres).await })*
        }
    };
}

mod alerts;
mod chat;
mod conformance;
mod crash;
mod discord;
mod executions;
mod http_runner;
mod keys;
mod matrix;
mod metrics;
mod openapi;
mod ops;
mod outbox;
mod packs;
mod python;
mod runners;
mod secrets;
mod server;
mod slack;
mod st2core;
mod store;
mod stream;
mod webhooks;
mod workflows;
