//! squall, the binary's library half: configuration, the HTTP API, the
//! server wiring and the CLI definitions. The only crate that names concrete
//! adapters.

pub mod api;
pub mod cli;
pub mod config;
pub mod dispatcher;
pub mod output;
pub mod server;
pub mod signatures;
pub mod stream;
