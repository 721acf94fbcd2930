//! squall's edges: chat adapters (one module per platform, one cargo feature
//! each) and alert receivers. Everything here implements traits from
//! `squall-engine`; the dispatcher never names a platform.

#[cfg(feature = "alerts")]
pub mod alerts;
pub mod common;
pub mod config;
#[cfg(feature = "console")]
pub mod console;
#[cfg(feature = "discord")]
pub mod discord;
#[cfg(feature = "matrix")]
pub mod matrix;
#[cfg(feature = "slack")]
pub mod slack;
