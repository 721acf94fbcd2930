//! Initial schema: trigger instances, rule enforcements, executions, API keys
//! and the append-only audit log.
//!
//! Timestamps are integer milliseconds since the Unix epoch and JSON documents
//! are stored as text, so both backends store identical values.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum TriggerInstances {
    Table,
    Id,
    Trigger,
    Payload,
    Source,
    OccurredAt,
}

#[derive(DeriveIden)]
enum RuleEnforcements {
    Table,
    Id,
    Rule,
    TriggerInstanceId,
    ExecutionId,
    Status,
    FailureReason,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Executions {
    Table,
    Id,
    Action,
    Runner,
    Status,
    Parameters,
    Result,
    Stdout,
    Stderr,
    ExitCode,
    Error,
    Context,
    ParentId,
    Attempt,
    Idempotent,
    LeaseOwner,
    LeaseExpiresAt,
    CreatedAt,
    StartedAt,
    FinishedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    Name,
    KeyHash,
    Enabled,
    CreatedAt,
}

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    Id,
    At,
    Actor,
    Kind,
    Subject,
    Detail,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TriggerInstances::Table)
                    .col(ColumnDef::new(TriggerInstances::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(TriggerInstances::Trigger).string().not_null())
                    .col(ColumnDef::new(TriggerInstances::Payload).text().not_null())
                    .col(ColumnDef::new(TriggerInstances::Source).string().not_null())
                    .col(ColumnDef::new(TriggerInstances::OccurredAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RuleEnforcements::Table)
                    .col(ColumnDef::new(RuleEnforcements::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(RuleEnforcements::Rule).string().not_null())
                    .col(ColumnDef::new(RuleEnforcements::TriggerInstanceId).string().not_null())
                    .col(ColumnDef::new(RuleEnforcements::ExecutionId).string().null())
                    .col(ColumnDef::new(RuleEnforcements::Status).string().not_null())
                    .col(ColumnDef::new(RuleEnforcements::FailureReason).text().null())
                    .col(ColumnDef::new(RuleEnforcements::CreatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_rule_enforcements_trigger_instance")
                    .table(RuleEnforcements::Table)
                    .col(RuleEnforcements::TriggerInstanceId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Executions::Table)
                    .col(ColumnDef::new(Executions::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(Executions::Action).string().not_null())
                    .col(ColumnDef::new(Executions::Runner).string().not_null())
                    .col(ColumnDef::new(Executions::Status).string().not_null())
                    .col(ColumnDef::new(Executions::Parameters).text().not_null())
                    .col(ColumnDef::new(Executions::Result).text().null())
                    .col(ColumnDef::new(Executions::Stdout).text().null())
                    .col(ColumnDef::new(Executions::Stderr).text().null())
                    .col(ColumnDef::new(Executions::ExitCode).integer().null())
                    .col(ColumnDef::new(Executions::Error).text().null())
                    .col(ColumnDef::new(Executions::Context).text().not_null())
                    .col(ColumnDef::new(Executions::ParentId).string().null())
                    .col(ColumnDef::new(Executions::Attempt).integer().not_null().default(1))
                    .col(ColumnDef::new(Executions::Idempotent).boolean().not_null().default(false))
                    .col(ColumnDef::new(Executions::LeaseOwner).string().null())
                    .col(ColumnDef::new(Executions::LeaseExpiresAt).big_integer().null())
                    .col(ColumnDef::new(Executions::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Executions::StartedAt).big_integer().null())
                    .col(ColumnDef::new(Executions::FinishedAt).big_integer().null())
                    .col(ColumnDef::new(Executions::UpdatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        // The queue claim scans requested executions in id (= time) order.
        manager
            .create_index(
                Index::create()
                    .name("idx_executions_status_id")
                    .table(Executions::Table)
                    .col(Executions::Status)
                    .col(Executions::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_executions_action_id")
                    .table(Executions::Table)
                    .col(Executions::Action)
                    .col(Executions::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(ColumnDef::new(ApiKeys::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(ApiKeys::Name).string().not_null())
                    .col(ColumnDef::new(ApiKeys::KeyHash).string().not_null().unique_key())
                    .col(ColumnDef::new(ApiKeys::Enabled).boolean().not_null().default(true))
                    .col(ColumnDef::new(ApiKeys::CreatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditLog::Table)
                    .col(ColumnDef::new(AuditLog::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(AuditLog::At).big_integer().not_null())
                    .col(ColumnDef::new(AuditLog::Actor).string().not_null())
                    .col(ColumnDef::new(AuditLog::Kind).string().not_null())
                    .col(ColumnDef::new(AuditLog::Subject).string().not_null())
                    .col(ColumnDef::new(AuditLog::Detail).text().not_null())
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            AuditLog::Table.into_iden(),
            ApiKeys::Table.into_iden(),
            Executions::Table.into_iden(),
            RuleEnforcements::Table.into_iden(),
            TriggerInstances::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
