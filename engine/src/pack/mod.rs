//! Packs: the model of loaded content and the loader that builds it from disk.

pub mod builtin;
pub mod config;
mod doc;
pub mod loader;
pub mod model;
mod params;
mod validate;

pub use loader::{
    LoadOptions, PackError, PackLoad, PackReport, RefusedPack, load_pack_roots, load_pack_tree,
    load_packs, report_pack_roots,
};
pub use model::*;
