//! squall's end-to-end tests, one binary with a module per area.

mod crash;
mod executions;
mod packs;
mod server;
mod store;
mod webhooks;
