//! Chat notices sent by actions (`chatops.post_message`), the thread each
//! thread key (e.g. an alert fingerprint) lives in, and the last due time each
//! timer rule fired for, and the signed webhook requests seen recently
//! (replay refusal across nodes).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ChatOutbox {
    Table,
    Id,
    ExecutionId,
    Target,
    Message,
    ThreadKey,
    State,
    SentRef,
    Error,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ChatThreads {
    Table,
    Key,
    RootMessageId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum WebhookReplays {
    Table,
    Token,
    SeenAt,
}

#[derive(DeriveIden)]
enum TimerState {
    Table,
    Rule,
    LastDue,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ChatOutbox::Table)
                    .col(
                        ColumnDef::new(ChatOutbox::Id)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(ChatOutbox::ExecutionId).string().null())
                    .col(ColumnDef::new(ChatOutbox::Target).string().not_null())
                    .col(ColumnDef::new(ChatOutbox::Message).text().not_null())
                    .col(ColumnDef::new(ChatOutbox::ThreadKey).string().null())
                    .col(ColumnDef::new(ChatOutbox::State).string().not_null())
                    .col(ColumnDef::new(ChatOutbox::SentRef).text().null())
                    .col(ColumnDef::new(ChatOutbox::Error).text().null())
                    .col(
                        ColumnDef::new(ChatOutbox::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ChatOutbox::UpdatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_chat_outbox_state")
                    .table(ChatOutbox::Table)
                    .col(ChatOutbox::State)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ChatThreads::Table)
                    .col(
                        ColumnDef::new(ChatThreads::Key)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(ChatThreads::RootMessageId)
                            .string()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ChatThreads::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(TimerState::Table)
                    .col(
                        ColumnDef::new(TimerState::Rule)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(TimerState::LastDue).big_integer().not_null())
                    .col(
                        ColumnDef::new(TimerState::UpdatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookReplays::Table)
                    .col(
                        ColumnDef::new(WebhookReplays::Token)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(WebhookReplays::SeenAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            WebhookReplays::Table.into_iden(),
            TimerState::Table.into_iden(),
            ChatThreads::Table.into_iden(),
            ChatOutbox::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
