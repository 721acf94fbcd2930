//! squall's end-to-end tests, one binary with a module per area.
#![recursion_limit = "256"]

mod alerts;
mod chat;
mod crash;
mod executions;
mod matrix;
mod packs;
mod server;
mod store;
mod webhooks;
mod workflows;
