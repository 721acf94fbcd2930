//! squall's database schema, one migration per file. The same migrations run on
//! SQLite (embedded default) and PostgreSQL (several nodes).

pub use sea_orm_migration::prelude::*;

mod m20261125_000001_init;
mod m20261125_000002_workflows;
mod m20261125_000003_chat_and_timers;
mod m20261201_000004_secret_lineage;
mod m20261203_000005_outbox_delivery;
mod m20261206_000006_datastore;
mod m20261207_000007_events;
mod m20261207_000008_retry;

/// Every migration, in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_init::Migration),
            Box::new(m20261125_000002_workflows::Migration),
            Box::new(m20261125_000003_chat_and_timers::Migration),
            Box::new(m20261201_000004_secret_lineage::Migration),
            Box::new(m20261203_000005_outbox_delivery::Migration),
            Box::new(m20261206_000006_datastore::Migration),
            Box::new(m20261207_000007_events::Migration),
            Box::new(m20261207_000008_retry::Migration),
        ]
    }
}
