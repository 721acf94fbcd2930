//! Workflows and approvals: per-task state of every workflow execution,
//! inquiries (approval requests) and their votes, and an index to find the
//! children of an execution.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Executions {
    Table,
    ParentId,
}

#[derive(DeriveIden)]
enum WorkflowTasks {
    Table,
    Id,
    WorkflowId,
    Name,
    Status,
    Attempt,
    ExecutionId,
    ItemsTotal,
    Inbound,
    NotBefore,
    Result,
    Publish,
    Error,
    Seq,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Inquiries {
    Table,
    Id,
    ExecutionId,
    WorkflowId,
    Status,
    Params,
    Requester,
    Target,
    PromptRef,
    PromptKey,
    PromptState,
    Response,
    DecidedBy,
    DecidedAt,
    ExpiresAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum InquiryVotes {
    Table,
    Id,
    InquiryId,
    Voter,
    Approve,
    Response,
    At,
}

fn id_col<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col)
        .string()
        .not_null()
        .primary_key()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("idx_executions_parent")
                    .table(Executions::Table)
                    .col(Executions::ParentId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WorkflowTasks::Table)
                    .col(id_col(WorkflowTasks::Id))
                    .col(
                        ColumnDef::new(WorkflowTasks::WorkflowId)
                            .string()
                            .not_null(),
                    )
                    .col(ColumnDef::new(WorkflowTasks::Name).string().not_null())
                    .col(ColumnDef::new(WorkflowTasks::Status).string().not_null())
                    .col(ColumnDef::new(WorkflowTasks::Attempt).integer().not_null())
                    .col(ColumnDef::new(WorkflowTasks::ExecutionId).string().null())
                    .col(ColumnDef::new(WorkflowTasks::ItemsTotal).integer().null())
                    .col(ColumnDef::new(WorkflowTasks::Inbound).integer().not_null())
                    .col(
                        ColumnDef::new(WorkflowTasks::NotBefore)
                            .big_integer()
                            .null(),
                    )
                    .col(ColumnDef::new(WorkflowTasks::Result).text().null())
                    .col(ColumnDef::new(WorkflowTasks::Publish).text().null())
                    .col(ColumnDef::new(WorkflowTasks::Error).text().null())
                    .col(ColumnDef::new(WorkflowTasks::Seq).big_integer().null())
                    .col(
                        ColumnDef::new(WorkflowTasks::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(WorkflowTasks::UpdatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_workflow_tasks_workflow")
                    .table(WorkflowTasks::Table)
                    .col(WorkflowTasks::WorkflowId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Inquiries::Table)
                    .col(id_col(Inquiries::Id))
                    .col(
                        ColumnDef::new(Inquiries::ExecutionId)
                            .string()
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(Inquiries::WorkflowId).string().null())
                    .col(ColumnDef::new(Inquiries::Status).string().not_null())
                    .col(ColumnDef::new(Inquiries::Params).text().not_null())
                    .col(ColumnDef::new(Inquiries::Requester).string().null())
                    .col(ColumnDef::new(Inquiries::Target).text().null())
                    .col(ColumnDef::new(Inquiries::PromptRef).text().null())
                    .col(ColumnDef::new(Inquiries::PromptKey).string().null())
                    .col(ColumnDef::new(Inquiries::PromptState).string().not_null())
                    .col(ColumnDef::new(Inquiries::Response).text().null())
                    .col(ColumnDef::new(Inquiries::DecidedBy).text().null())
                    .col(ColumnDef::new(Inquiries::DecidedAt).big_integer().null())
                    .col(ColumnDef::new(Inquiries::ExpiresAt).big_integer().null())
                    .col(
                        ColumnDef::new(Inquiries::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Inquiries::UpdatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, col) in [
            ("idx_inquiries_status", Inquiries::Status),
            ("idx_inquiries_prompt_state", Inquiries::PromptState),
            ("idx_inquiries_prompt_key", Inquiries::PromptKey),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Inquiries::Table)
                        .col(col)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(InquiryVotes::Table)
                    .col(id_col(InquiryVotes::Id))
                    .col(ColumnDef::new(InquiryVotes::InquiryId).string().not_null())
                    .col(ColumnDef::new(InquiryVotes::Voter).string().not_null())
                    .col(ColumnDef::new(InquiryVotes::Approve).boolean().not_null())
                    .col(ColumnDef::new(InquiryVotes::Response).text().not_null())
                    .col(ColumnDef::new(InquiryVotes::At).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_inquiry_votes_voter")
                    .table(InquiryVotes::Table)
                    .col(InquiryVotes::InquiryId)
                    .col(InquiryVotes::Voter)
                    .unique()
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            InquiryVotes::Table.into_iden(),
            Inquiries::Table.into_iden(),
            WorkflowTasks::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        manager
            .drop_index(Index::drop().name("idx_executions_parent").to_owned())
            .await?;
        Ok(())
    }
}
