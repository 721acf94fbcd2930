//! The execution queue: insert, claim with a lease, complete, recover.
//!
//! Claims use `FOR UPDATE SKIP LOCKED` on PostgreSQL so several nodes can pull
//! from one table; SQLite has a single writer, so its plain UPDATE is atomic.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait,
    FromQueryResult, QueryFilter, QueryOrder, QuerySelect, Statement, TransactionTrait, Value,
};

use super::{INSERT_CHUNK, Store, StoreError, execution, shaped_chunks};
use crate::execution::{ExecutionStatus, now_ms};

/// An execution to enqueue (status `requested`).
#[derive(Debug, Clone)]
pub struct NewExecution {
    pub id: String,
    pub action: String,
    pub runner: String,
    pub parameters: serde_json::Value,
    pub context: serde_json::Value,
    pub parent_id: Option<String>,
    pub idempotent: bool,
    /// Already finished (workflow tasks whose action ran in-process): stored
    /// with this status and result instead of `requested`.
    pub outcome: Option<(ExecutionStatus, serde_json::Value)>,
    /// Its own secret parameter values and those it inherited (`crate::secrets`).
    pub secrets: crate::secrets::Secrets,
}

/// The end of one run, written by the intake on behalf of a worker.
#[derive(Debug, Clone)]
pub struct Completion {
    pub id: String,
    /// The node that held the lease: a completion from a node that lost its
    /// lease (the execution was recovered meanwhile) is ignored.
    pub lease_owner: String,
    pub status: ExecutionStatus,
    pub result: serde_json::Value,
    pub stdout: String,
    pub stderr: String,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    /// Whether a retry can help, when a failed run says.
    pub retry: Option<crate::runner::Retry>,
    /// Chat messages the end sends (`notify:`), written in the same commit
    /// when, and only when, this completion is the one stored.
    pub notices: Vec<super::NewOutboxRow>,
    /// What the end causes (rules on `squall.execution`, actiontrigger,
    /// notifytrigger: their trigger instances and executions), written on the
    /// same terms.
    pub follow_up: super::WriteBatch,
    /// When the run began and ended (ms), as the worker measured it. The
    /// claim's own time is when the claim was asked for (under load, before
    /// the row even existed), and completions are written in batches (the
    /// commit can come later): either would make runs look longer, and
    /// overlapping, than they were. `None` keeps the claim's start (a
    /// workflow resumed after a park keeps its first start).
    pub started_at: Option<i64>,
    pub finished_at: i64,
}

/// Filters for listing executions.
#[derive(Debug, Clone, Default)]
pub struct ExecutionFilter {
    pub action: Option<String>,
    pub status: Option<ExecutionStatus>,
    pub limit: u64,
}

/// What recovery did with executions whose node died.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub abandoned: u64,
    pub requeued: u64,
}

pub(super) async fn insert_executions(
    txn: &DatabaseTransaction,
    executions: &[NewExecution],
    now: i64,
) -> Result<(), StoreError> {
    for chunk in shaped_chunks(executions, txn.get_database_backend(), INSERT_CHUNK) {
        let rows = chunk.iter().map(|e| execution::ActiveModel {
            id: Set(e.id.clone()),
            action: Set(e.action.clone()),
            runner: Set(e.runner.clone()),
            status: Set(e
                .outcome
                .as_ref()
                .map_or(ExecutionStatus::Requested, |o| o.0)
                .as_str()
                .into()),
            parameters: Set(e.parameters.to_string()),
            result: Set(e.outcome.as_ref().map(|o| o.1.to_string())),
            stdout: Set(None),
            stderr: Set(None),
            exit_code: Set(None),
            error: Set(None),
            context: Set(e.context.to_string()),
            parent_id: Set(e.parent_id.clone()),
            attempt: Set(1),
            idempotent: Set(e.idempotent),
            lease_owner: Set(None),
            lease_expires_at: Set(None),
            created_at: Set(now),
            started_at: Set(e.outcome.as_ref().map(|_| now)),
            finished_at: Set(e.outcome.as_ref().map(|_| now)),
            updated_at: Set(now),
            retry: Set(None),
            secrets: Set(e.secrets.to_stored()),
        });
        execution::Entity::insert_many(rows)
            .exec_without_returning(txn)
            .await?;
    }
    // Executions started from chat bring their ack and their (held) result.
    let chat_rows: Vec<_> = executions
        .iter()
        .flat_map(|e| super::chat::rows_for_execution(&e.id, &e.context))
        .collect();
    if !chat_rows.is_empty() {
        super::chat::insert_outbox(txn, chat_rows, now).await?;
        if executions.iter().any(|e| e.outcome.is_some()) {
            super::chat::release_results(txn, now).await?;
        }
    }
    Ok(())
}

/// Completions per UPDATE statement (11 bound values each).
const COMPLETION_CHUNK: usize = 256;

/// Store the completions whose lease still holds; returns the ids stored.
pub(super) async fn apply_completions(
    txn: &DatabaseTransaction,
    completions: &[Completion],
    now: i64,
) -> Result<std::collections::HashSet<String>, StoreError> {
    let mut applied = std::collections::HashSet::new();
    let backend = txn.get_database_backend();
    // One statement per chunk: each statement is a round trip to the database
    // driver, and completions arrive by the thousand.
    for chunk in shaped_chunks(completions, backend, COMPLETION_CHUNK) {
        let rows = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
        let sql = placeholders(
            backend,
            &format!(
                "UPDATE executions SET status = v.column3, result = v.column4, stdout = v.column5, \
                 stderr = v.column6, exit_code = v.column7, error = v.column8, finished_at = v.column9, \
                 started_at = COALESCE(v.column10, executions.started_at), retry = v.column11, updated_at = ?, lease_owner = NULL, lease_expires_at = NULL \
                 FROM (VALUES {rows}) AS v WHERE executions.id = v.column1 \
                 AND executions.lease_owner = v.column2 AND executions.status IN ('running', 'canceling', 'pausing') \
                 RETURNING id"
            ),
        );
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 11 + 1);
        // The SET placeholder comes first in the text, before the VALUES list.
        values.push(now.into());
        for c in chunk {
            values.push(c.id.clone().into());
            values.push(c.lease_owner.clone().into());
            values.push(c.status.as_str().into());
            values.push(c.result.to_string().into());
            values.push(c.stdout.clone().into());
            values.push(c.stderr.clone().into());
            values.push(c.exit_code.into());
            values.push(c.error.clone().into());
            values.push(c.finished_at.into());
            values.push(c.started_at.into());
            values.push(c.retry.map(crate::runner::Retry::as_str).into());
        }
        for row in txn
            .query_all_raw(Statement::from_sql_and_values(backend, &sql, values))
            .await?
        {
            applied.insert(row.try_get::<String>("", "id")?);
        }
    }
    Ok(applied)
}

/// Rewrite `?` placeholders as `$n` for PostgreSQL.
pub(crate) fn placeholders(backend: DbBackend, sql: &str) -> String {
    if backend != DbBackend::Postgres {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for ch in sql.chars() {
        if ch == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(ch);
        }
    }
    out
}

impl Store {
    /// Claim up to `limit` requested executions for `owner`, oldest first, and
    /// mark them running under a lease that ends at `lease_until` (ms).
    pub async fn claim_executions(
        &self,
        owner: &str,
        limit: u64,
        lease_until: i64,
    ) -> Result<Vec<execution::Model>, StoreError> {
        self.claim_where(owner, limit, lease_until, None).await
    }

    /// Claim one specific requested execution (the CLI runs its own executions
    /// in-process when no server is involved).
    pub async fn claim_execution_by_id(
        &self,
        owner: &str,
        id: &str,
        lease_until: i64,
    ) -> Result<Option<execution::Model>, StoreError> {
        Ok(self
            .claim_where(owner, 1, lease_until, Some(id))
            .await?
            .into_iter()
            .next())
    }

    async fn claim_where(
        &self,
        owner: &str,
        limit: u64,
        lease_until: i64,
        id: Option<&str>,
    ) -> Result<Vec<execution::Model>, StoreError> {
        let backend = self.backend();
        let lock = if backend == DbBackend::Postgres {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let id_filter = if id.is_some() { " AND id = ?" } else { "" };
        let sql = placeholders(
            backend,
            &format!(
                "UPDATE executions SET status = 'running', lease_owner = ?, lease_expires_at = ?, \
                 started_at = COALESCE(started_at, ?), updated_at = ? WHERE id IN (SELECT id FROM executions \
                 WHERE status = 'requested'{id_filter} ORDER BY id LIMIT ?{lock}) RETURNING *"
            ),
        );
        let now = now_ms();
        let mut values: Vec<Value> = vec![owner.into(), lease_until.into(), now.into(), now.into()];
        if let Some(id) = id {
            values.push(id.into());
        }
        values.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
        let stmt = Statement::from_sql_and_values(backend, sql, values);
        let rows = {
            let _turn = self.write_turn().await;
            self.db.query_all_raw(stmt).await?
        };
        let mut claimed = rows
            .iter()
            .map(|row| execution::Model::from_query_result(row, ""))
            .collect::<Result<Vec<_>, _>>()?;
        claimed.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(claimed)
    }

    /// Extend the leases of everything `owner` is running (the heartbeat).
    pub async fn extend_leases(&self, owner: &str, lease_until: i64) -> Result<u64, StoreError> {
        let sql = placeholders(
            self.backend(),
            "UPDATE executions SET lease_expires_at = ? WHERE lease_owner = ? \
             AND status IN ('running', 'canceling', 'pausing')",
        );
        let _turn = self.write_turn().await;
        let res = self
            .db
            .execute_raw(Statement::from_sql_and_values(
                self.backend(),
                sql,
                [lease_until.into(), owner.into()],
            ))
            .await?;
        Ok(res.rows_affected())
    }

    /// Recover executions whose node died: those running under an expired
    /// lease, or (`all_running`, for a single-node SQLite start-up) every
    /// running execution not owned by `current_owner`. Idempotent actions go
    /// back to the queue; the rest are marked `abandoned`.
    pub async fn recover_orphans(
        &self,
        current_owner: &str,
        all_running: bool,
    ) -> Result<RecoveryReport, StoreError> {
        let backend = self.backend();
        let now = now_ms();
        let orphan = if all_running {
            "status IN ('running', 'canceling', 'pausing') AND (lease_owner IS NULL OR lease_owner <> ?)"
        } else {
            "status IN ('running', 'canceling', 'pausing') AND lease_expires_at < ? AND (lease_owner IS NULL OR lease_owner <> ?)"
        };
        let mut cond_values: Vec<Value> = Vec::new();
        if !all_running {
            cond_values.push(now.into());
        }
        cond_values.push(current_owner.into());

        let requeue = placeholders(
            backend,
            &format!(
                "UPDATE executions SET status = 'requested', attempt = attempt + 1, \
                 lease_owner = NULL, lease_expires_at = NULL, started_at = NULL, updated_at = ? \
                 WHERE idempotent = ? AND status IN ('running', 'pausing') AND {orphan}"
            ),
        );
        let mut values: Vec<Value> = vec![now.into(), true.into()];
        values.extend(cond_values.iter().cloned());
        let _turn = self.write_turn().await;
        let txn = self.db.begin().await?;
        let requeued = txn
            .execute_raw(Statement::from_sql_and_values(backend, requeue, values))
            .await?
            .rows_affected();

        let abandon = placeholders(
            backend,
            &format!(
                "UPDATE executions SET status = 'abandoned', finished_at = ?, updated_at = ?, \
                 error = 'the node running this execution stopped before it finished', retry = 'may_help', \
                 lease_owner = NULL, lease_expires_at = NULL WHERE {orphan}"
            ),
        );
        let mut values: Vec<Value> = vec![now.into(), now.into()];
        values.extend(cond_values);
        let abandoned = txn
            .execute_raw(Statement::from_sql_and_values(backend, abandon, values))
            .await?
            .rows_affected();
        // Abandoned commands from chat get their final message.
        if abandoned > 0 {
            super::chat::release_results(&txn, now).await?;
        }
        txn.commit().await?;
        Ok(RecoveryReport {
            abandoned,
            requeued,
        })
    }

    pub async fn get_execution(&self, id: &str) -> Result<Option<execution::Model>, StoreError> {
        Ok(execution::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?)
    }

    /// Newest first.
    pub async fn list_executions(
        &self,
        filter: &ExecutionFilter,
    ) -> Result<Vec<execution::Model>, StoreError> {
        let mut query = execution::Entity::find();
        if let Some(action) = &filter.action {
            query = query.filter(execution::Column::Action.eq(action.as_str()));
        }
        if let Some(status) = filter.status {
            query = query.filter(execution::Column::Status.eq(status.as_str()));
        }
        Ok(query
            .order_by_desc(execution::Column::Id)
            .limit(filter.limit.max(1))
            .all(&self.db)
            .await?)
    }

    /// Executions started by one trigger instance (through its rule enforcements).
    pub async fn executions_for_trigger(
        &self,
        trigger_instance_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        Ok(self
            .enforcements_for_trigger(trigger_instance_id)
            .await?
            .into_iter()
            .filter_map(|e| e.execution_id)
            .collect())
    }

    /// Count executions per status (for the crash-safety checks and metrics).
    pub async fn count_executions_by_status(&self) -> Result<Vec<(String, u64)>, StoreError> {
        #[derive(FromQueryResult)]
        struct Row {
            status: String,
            n: i64,
        }
        let rows = Row::find_by_statement(Statement::from_string(
            self.backend(),
            "SELECT status, COUNT(*) AS n FROM executions GROUP BY status ORDER BY status",
        ))
        .all(&self.db)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.status, u64::try_from(r.n).unwrap_or(0)))
            .collect())
    }

    /// What `/metrics` reads from the store: executions by status, and open
    /// inquiries.
    pub async fn scrape_counts(&self) -> Result<(Vec<(String, u64)>, u64), StoreError> {
        let by_status = self.count_executions_by_status().await?;
        let row = self
            .db
            .query_one_raw(Statement::from_string(
                self.backend(),
                "SELECT COUNT(*) AS n FROM inquiries WHERE status = 'pending'",
            ))
            .await?;
        let open: i64 = match row {
            Some(row) => row.try_get("", "n")?,
            None => 0,
        };
        Ok((by_status, u64::try_from(open).unwrap_or(0)))
    }
}

/// What a cancel request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It had not started: it is canceled now.
    Canceled,
    /// It is running: its worker will kill it and record `canceled`.
    Canceling,
    /// It had already finished with this status.
    AlreadyFinished(String),
    NotFound,
}

impl Store {
    /// Cancel an execution: at once when it has not started, through its
    /// worker when it is running.
    pub async fn request_cancel(&self, id: &str) -> Result<CancelOutcome, StoreError> {
        let backend = self.backend();
        let now = now_ms();
        let _turn = self.write_turn().await;
        let txn = self.db.begin().await?;
        let queued = txn
            .execute_raw(Statement::from_sql_and_values(
                backend,
                placeholders(
                    backend,
                    "UPDATE executions SET status = 'canceled', finished_at = ?, updated_at = ?, \
                     error = 'canceled before it started' \
                     WHERE id = ? AND status IN ('requested', 'scheduled', 'pending', 'paused')",
                ),
                [now.into(), now.into(), id.into()],
            ))
            .await?
            .rows_affected();
        if queued > 0 {
            // A pending approval request ends with its execution.
            let closed = txn
                .execute_raw(Statement::from_sql_and_values(
                    backend,
                    placeholders(
                        backend,
                        "UPDATE inquiries SET status = 'canceled', decided_at = ?, updated_at = ? \
                         WHERE execution_id = ? AND status = 'pending'",
                    ),
                    [now.into(), now.into(), id.into()],
                ))
                .await?
                .rows_affected();
            if closed > 0
                && let Some(inq) = super::inquiry::Entity::find()
                    .filter(super::inquiry::Column::ExecutionId.eq(id))
                    .one(&txn)
                    .await?
            {
                super::chat::queue_decision(&txn, &inq.id, now).await?;
            }
            super::chat::release_results(&txn, now).await?;
            txn.commit().await?;
            return Ok(CancelOutcome::Canceled);
        }
        let running = txn
            .execute_raw(Statement::from_sql_and_values(
                backend,
                placeholders(
                    backend,
                    "UPDATE executions SET status = 'canceling', updated_at = ? WHERE id = ? AND status IN ('running', 'pausing')",
                ),
                [now.into(), id.into()],
            ))
            .await?
            .rows_affected();
        txn.commit().await?;
        if running > 0 {
            return Ok(CancelOutcome::Canceling);
        }
        Ok(match self.get_execution(id).await? {
            Some(model) if model.status == "canceling" => CancelOutcome::Canceling,
            Some(model) => CancelOutcome::AlreadyFinished(model.status),
            None => CancelOutcome::NotFound,
        })
    }

    /// Ids of executions `owner` runs that someone asked to cancel.
    pub async fn canceling_owned_by(&self, owner: &str) -> Result<Vec<String>, StoreError> {
        Ok(execution::Entity::find()
            .filter(execution::Column::LeaseOwner.eq(owner))
            .filter(execution::Column::Status.eq("canceling"))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| m.id)
            .collect())
    }
}
