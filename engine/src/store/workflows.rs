//! Workflow task state, and the status moves that park and wake workflows.

use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter,
    QueryOrder, Statement, TransactionTrait, Value,
};

use super::executions::{insert_executions, placeholders};
use super::{
    INSERT_CHUNK, NewExecution, Store, StoreError, execution, shaped_chunks, workflow_task,
};
use crate::execution::now_ms;

/// Statuses in which an execution may still change.
pub const ACTIVE_STATUSES: &str =
    "('requested', 'scheduled', 'running', 'canceling', 'pending', 'pausing', 'paused')";

/// The current state of one child execution.
#[derive(Debug, Clone, FromQueryResult)]
pub struct ChildState {
    pub id: String,
    pub status: String,
    pub result: Option<String>,
    pub error: Option<String>,
}

impl Store {
    /// Write new child executions and changed task rows in one transaction.
    pub async fn write_workflow(
        &self,
        executions: &[NewExecution],
        tasks: &[workflow_task::Model],
    ) -> Result<(), StoreError> {
        if executions.is_empty() && tasks.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let _turn = self.write_turn().await;
        let txn = self.db.begin().await?;
        insert_executions(&txn, executions, now).await?;
        for chunk in shaped_chunks(tasks, self.backend(), INSERT_CHUNK) {
            let rows = chunk.iter().map(|t| {
                let mut row = workflow_task::ActiveModel::from(t.clone()).reset_all();
                row.updated_at = sea_orm::ActiveValue::Set(now);
                row
            });
            workflow_task::Entity::insert_many(rows)
                .on_conflict(
                    OnConflict::column(workflow_task::Column::Id)
                        .update_columns([
                            workflow_task::Column::Status,
                            workflow_task::Column::Attempt,
                            workflow_task::Column::ExecutionId,
                            workflow_task::Column::ItemsTotal,
                            workflow_task::Column::Inbound,
                            workflow_task::Column::NotBefore,
                            workflow_task::Column::Result,
                            workflow_task::Column::Publish,
                            workflow_task::Column::Error,
                            workflow_task::Column::Seq,
                            workflow_task::Column::UpdatedAt,
                        ])
                        .to_owned(),
                )
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Task rows of one workflow execution, in creation order.
    pub async fn workflow_tasks(
        &self,
        workflow_id: &str,
    ) -> Result<Vec<workflow_task::Model>, StoreError> {
        Ok(workflow_task::Entity::find()
            .filter(workflow_task::Column::WorkflowId.eq(workflow_id))
            .order_by_asc(workflow_task::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// Status and result of some executions.
    pub async fn execution_states(&self, ids: &[String]) -> Result<Vec<ChildState>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql = placeholders(
                self.backend(),
                &format!("SELECT id, status, result, error FROM executions WHERE id IN ({marks})"),
            );
            let values: Vec<Value> = chunk.iter().map(|id| id.clone().into()).collect();
            out.extend(
                ChildState::find_by_statement(Statement::from_sql_and_values(
                    self.backend(),
                    sql,
                    values,
                ))
                .all(&self.db)
                .await?,
            );
        }
        Ok(out)
    }

    /// Every execution a workflow started, oldest first.
    pub async fn children_of(&self, parent_id: &str) -> Result<Vec<execution::Model>, StoreError> {
        Ok(execution::Entity::find()
            .filter(execution::Column::ParentId.eq(parent_id))
            .order_by_asc(execution::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// Children of `parent_id` that may still change.
    pub async fn active_children(&self, parent_id: &str) -> Result<Vec<String>, StoreError> {
        let sql = placeholders(
            self.backend(),
            &format!(
                "SELECT id, status, result, error FROM executions WHERE parent_id = ? \
                 AND status IN {ACTIVE_STATUSES}"
            ),
        );
        Ok(
            ChildState::find_by_statement(Statement::from_sql_and_values(
                self.backend(),
                sql,
                [parent_id.into()],
            ))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect(),
        )
    }

    /// Park a running workflow (waiting on approvals, or paused): release its
    /// lease and set `to`, unless a child it waits on finished meanwhile (then
    /// the caller must handle that child instead). Returns whether it parked.
    pub async fn park_workflow(
        &self,
        id: &str,
        owner: &str,
        from: &str,
        to: &str,
    ) -> Result<bool, StoreError> {
        let sql = placeholders(
            self.backend(),
            &format!(
                "UPDATE executions SET status = ?, lease_owner = NULL, lease_expires_at = NULL, \
                 updated_at = ? WHERE id = ? AND lease_owner = ? AND status = ? AND NOT EXISTS \
                 (SELECT 1 FROM workflow_tasks t JOIN executions c ON c.id = t.execution_id \
                 WHERE t.workflow_id = ? AND t.status = 'running' AND c.status NOT IN {ACTIVE_STATUSES})"
            ),
        );
        let _turn = self.write_turn().await;
        let res = self
            .db
            .execute_raw(Statement::from_sql_and_values(
                self.backend(),
                sql,
                [
                    to.into(),
                    now_ms().into(),
                    id.into(),
                    owner.into(),
                    from.into(),
                    id.into(),
                ],
            ))
            .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Park a leaf execution (an approval request) in `pending`.
    pub async fn park_execution(&self, id: &str, owner: &str) -> Result<bool, StoreError> {
        let sql = placeholders(
            self.backend(),
            "UPDATE executions SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL, \
             updated_at = ? WHERE id = ? AND lease_owner = ? AND status = 'running'",
        );
        let _turn = self.write_turn().await;
        let res = self
            .db
            .execute_raw(Statement::from_sql_and_values(
                self.backend(),
                sql,
                [now_ms().into(), id.into(), owner.into()],
            ))
            .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Move an execution from one of `from` to `to`; returns whether it moved.
    pub async fn move_status(&self, id: &str, from: &[&str], to: &str) -> Result<bool, StoreError> {
        let marks = vec!["?"; from.len()].join(", ");
        let sql = placeholders(
            self.backend(),
            &format!(
                "UPDATE executions SET status = ?, updated_at = ? WHERE id = ? AND status IN ({marks})"
            ),
        );
        let mut values: Vec<Value> = vec![to.into(), now_ms().into(), id.into()];
        values.extend(from.iter().map(|s| (*s).into()));
        let _turn = self.write_turn().await;
        let res = self
            .db
            .execute_raw(Statement::from_sql_and_values(self.backend(), sql, values))
            .await?;
        Ok(res.rows_affected() == 1)
    }
}
