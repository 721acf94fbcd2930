//! The secret values each execution and trigger instance inherited (JSON
//! array of strings, NULL when none), so every view of them can mask those
//! values (see `squall_engine::secrets`).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Executions {
    Table,
    Secrets,
}

#[derive(DeriveIden)]
enum TriggerInstances {
    Table,
    Secrets,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Executions::Table)
                    .add_column(ColumnDef::new(Executions::Secrets).text().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(TriggerInstances::Table)
                    .add_column(ColumnDef::new(TriggerInstances::Secrets).text().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Executions::Table)
                    .drop_column(Executions::Secrets)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(TriggerInstances::Table)
                    .drop_column(TriggerInstances::Secrets)
                    .to_owned(),
            )
            .await
    }
}
