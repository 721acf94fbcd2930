//! squall's engine: the domain model, pack loader, rules, templates, runners,
//! the durable execution queue and the store. It knows no chat platform by
//! name; adapters plug in through traits.

pub mod catalog;
pub mod chat;
pub mod criteria;
pub mod datastore;
pub mod describe;
pub mod engine;
pub mod execution;
pub mod inquiry;
pub mod intake;
pub mod kind;
pub mod metrics;
pub mod pack;
pub mod params;
pub mod rbac;
pub mod runner;
pub mod runners;
pub mod secrets;
pub mod sensitive;
pub mod store;
pub mod template;
pub mod timers;
pub mod triggers;
pub mod worker;
pub mod workflow;

pub use engine::{
    Engine, EngineError, EngineOptions, builtin_runners, load_catalog, load_catalog_lenient,
};
pub use squall_aliases;

/// Install the process-wide TLS crypto provider once. Several crates enable
/// different rustls providers; without one chosen explicitly, the first TLS
/// client would panic.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}
