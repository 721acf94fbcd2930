//! The chat outbox carries everything squall says in chat: acks, results,
//! progress edits, approval prompts, decisions, replies and notices. Each row
//! knows its kind, where it goes (platform, channel, thread), what it edits,
//! when it became deliverable (`ready_at`, the per-channel order), and who is
//! delivering it under which lease (any node may claim a row).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum ChatOutbox {
    Table,
    Kind,
    Platform,
    Channel,
    Thread,
    InquiryId,
    EditOf,
    ReadyAt,
    Attempts,
    NextAttemptAt,
    ClaimedBy,
    LeaseUntil,
    State,
}

fn columns() -> Vec<ColumnDef> {
    use ChatOutbox as C;
    vec![
        ColumnDef::new(C::Kind)
            .string()
            .not_null()
            .default("notice")
            .to_owned(),
        ColumnDef::new(C::Platform).string().null().to_owned(),
        ColumnDef::new(C::Channel).string().null().to_owned(),
        ColumnDef::new(C::Thread).string().null().to_owned(),
        ColumnDef::new(C::InquiryId).string().null().to_owned(),
        ColumnDef::new(C::EditOf).string().null().to_owned(),
        ColumnDef::new(C::ReadyAt)
            .big_integer()
            .not_null()
            .default(0)
            .to_owned(),
        ColumnDef::new(C::Attempts)
            .integer()
            .not_null()
            .default(0)
            .to_owned(),
        ColumnDef::new(C::NextAttemptAt)
            .big_integer()
            .null()
            .to_owned(),
        ColumnDef::new(C::ClaimedBy).string().null().to_owned(),
        ColumnDef::new(C::LeaseUntil)
            .big_integer()
            .null()
            .to_owned(),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one thing at a time.
        for mut column in columns() {
            manager
                .alter_table(
                    Table::alter()
                        .table(ChatOutbox::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .get_connection()
            .execute_unprepared("UPDATE chat_outbox SET ready_at = created_at")
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_chat_outbox_due")
                    .table(ChatOutbox::Table)
                    .col(ChatOutbox::State)
                    .col(ChatOutbox::ReadyAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_chat_outbox_channel")
                    .table(ChatOutbox::Table)
                    .col(ChatOutbox::Platform)
                    .col(ChatOutbox::Channel)
                    .col(ChatOutbox::State)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_chat_outbox_inquiry")
                    .table(ChatOutbox::Table)
                    .col(ChatOutbox::Kind)
                    .col(ChatOutbox::InquiryId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for name in [
            "idx_chat_outbox_due",
            "idx_chat_outbox_channel",
            "idx_chat_outbox_inquiry",
        ] {
            manager
                .drop_index(Index::drop().name(name).table(ChatOutbox::Table).to_owned())
                .await?;
        }
        for column in [
            ChatOutbox::Kind,
            ChatOutbox::Platform,
            ChatOutbox::Channel,
            ChatOutbox::Thread,
            ChatOutbox::InquiryId,
            ChatOutbox::EditOf,
            ChatOutbox::ReadyAt,
            ChatOutbox::Attempts,
            ChatOutbox::NextAttemptAt,
            ChatOutbox::ClaimedBy,
            ChatOutbox::LeaseUntil,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ChatOutbox::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
