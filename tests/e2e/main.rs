//! squall's end-to-end tests, one binary with a module per area.

mod chat;
mod crash;
mod executions;
mod packs;
mod server;
mod store;
mod webhooks;
