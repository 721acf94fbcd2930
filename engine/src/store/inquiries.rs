//! Inquiries (approval requests) and their votes. A decision, the execution
//! it ends and the wake-up of the workflow waiting on it are one transaction.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Statement, TransactionTrait,
};
use serde_json::{Value, json};

use super::executions::placeholders;
use super::{AuditEntry, Store, StoreError, inquiry, inquiry_vote};
use crate::execution::{new_id, now_ms};

/// One vote as the caller means it.
#[derive(Debug, Clone, PartialEq)]
pub enum VoteRecord {
    Approve(Value),
    Deny(Value),
    /// Take back an earlier vote (a removed reaction).
    Withdraw,
}

/// How an inquiry ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// `approved`, `denied`, `expired` or `canceled`.
    pub status: String,
    pub decided_by: Vec<String>,
    pub response: Value,
}

/// A new inquiry.
#[derive(Debug, Clone)]
pub struct NewInquiry {
    pub id: String,
    pub execution_id: String,
    pub workflow_id: Option<String>,
    pub params: Value,
    pub requester: Option<String>,
    pub target: Option<Value>,
    pub expires_at: Option<i64>,
}

async fn insert_audit(txn: &DatabaseTransaction, entries: &[AuditEntry]) -> Result<(), StoreError> {
    super::insert_audit(txn, entries, now_ms()).await
}

async fn exec(
    txn: &DatabaseTransaction,
    sql: &str,
    values: Vec<sea_orm::Value>,
) -> Result<u64, StoreError> {
    let backend = txn.get_database_backend();
    Ok(txn
        .execute_raw(Statement::from_sql_and_values(
            backend,
            placeholders(backend, sql),
            values,
        ))
        .await?
        .rows_affected())
}

/// End an inquiry, its execution, and wake the workflow parked on it.
async fn finish(
    txn: &DatabaseTransaction,
    inq: &inquiry::Model,
    decision: &Decision,
    exec_status: &str,
    exec_result: &Value,
    error: Option<String>,
) -> Result<bool, StoreError> {
    let now = now_ms();
    let moved = exec(
        txn,
        "UPDATE inquiries SET status = ?, response = ?, decided_by = ?, decided_at = ?, updated_at = ? \
         WHERE id = ? AND status = 'pending'",
        vec![
            decision.status.clone().into(),
            decision.response.to_string().into(),
            json!(decision.decided_by).to_string().into(),
            now.into(),
            now.into(),
            inq.id.clone().into(),
        ],
    )
    .await?;
    if moved == 0 {
        return Ok(false);
    }
    exec(
        txn,
        "UPDATE executions SET status = ?, result = ?, error = ?, finished_at = ?, updated_at = ? \
         WHERE id = ? AND status = 'pending'",
        vec![
            exec_status.into(),
            exec_result.to_string().into(),
            error.into(),
            now.into(),
            now.into(),
            inq.execution_id.clone().into(),
        ],
    )
    .await?;
    // The prompt's decision edit and, for a request asked straight from chat,
    // the command's result.
    super::chat::queue_decision(txn, &inq.id, now).await?;
    super::chat::release_results(txn, now).await?;
    if let Some(workflow) = &inq.workflow_id {
        exec(
            txn,
            "UPDATE executions SET status = 'requested', updated_at = ? WHERE id = ? AND status = 'pending'",
            vec![now.into(), workflow.clone().into()],
        )
        .await?;
    }
    Ok(true)
}

impl Store {
    /// Record an inquiry and park its execution in `pending`, atomically.
    /// Running again for the same execution (after a crash) only parks it.
    pub async fn create_inquiry(
        &self,
        new: NewInquiry,
        owner: &str,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let _turn = self.write_turn().await;
        let txn = self.db.begin().await?;
        let exists = inquiry::Entity::find()
            .filter(inquiry::Column::ExecutionId.eq(new.execution_id.as_str()))
            .one(&txn)
            .await?
            .is_some();
        if !exists {
            let has_target = new.target.is_some();
            if let Some(target) = &new.target {
                super::chat::insert_outbox(
                    &txn,
                    vec![super::chat::prompt_row(&new.id, &new.execution_id, target)],
                    now,
                )
                .await?;
            }
            inquiry::Entity::insert(inquiry::ActiveModel {
                id: Set(new.id),
                execution_id: Set(new.execution_id.clone()),
                workflow_id: Set(new.workflow_id),
                status: Set("pending".into()),
                params: Set(new.params.to_string()),
                requester: Set(new.requester),
                target: Set(new.target.map(|t| t.to_string())),
                prompt_ref: Set(None),
                prompt_key: Set(None),
                prompt_state: Set(if has_target { "new" } else { "none" }.into()),
                response: Set(None),
                decided_by: Set(None),
                decided_at: Set(None),
                expires_at: Set(new.expires_at),
                created_at: Set(now),
                updated_at: Set(now),
            })
            .exec_without_returning(&txn)
            .await?;
            insert_audit(&txn, &[audit]).await?;
        }
        let parked = exec(
            &txn,
            "UPDATE executions SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL, \
             updated_at = ? WHERE id = ? AND lease_owner = ? AND status = 'running'",
            vec![now.into(), new.execution_id.into(), owner.into()],
        )
        .await?;
        txn.commit().await?;
        Ok(parked == 1)
    }

    pub async fn get_inquiry(&self, id: &str) -> Result<Option<inquiry::Model>, StoreError> {
        Ok(inquiry::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?)
    }

    pub async fn inquiry_for_execution(
        &self,
        execution_id: &str,
    ) -> Result<Option<inquiry::Model>, StoreError> {
        Ok(inquiry::Entity::find()
            .filter(inquiry::Column::ExecutionId.eq(execution_id))
            .one(&self.db)
            .await?)
    }

    /// The inquiry whose chat prompt is `key` (`platform:message id`).
    pub async fn inquiry_by_prompt(&self, key: &str) -> Result<Option<inquiry::Model>, StoreError> {
        Ok(inquiry::Entity::find()
            .filter(inquiry::Column::PromptKey.eq(key))
            .one(&self.db)
            .await?)
    }

    /// Newest first; `status` filters (`pending`, ...).
    pub async fn list_inquiries(
        &self,
        status: Option<&str>,
        limit: u64,
    ) -> Result<Vec<inquiry::Model>, StoreError> {
        let mut q = inquiry::Entity::find();
        if let Some(status) = status {
            q = q.filter(inquiry::Column::Status.eq(status));
        }
        Ok(q.order_by_desc(inquiry::Column::Id)
            .limit(limit.max(1))
            .all(&self.db)
            .await?)
    }

    pub async fn inquiry_votes(
        &self,
        inquiry_id: &str,
    ) -> Result<Vec<inquiry_vote::Model>, StoreError> {
        Ok(inquiry_vote::Entity::find()
            .filter(inquiry_vote::Column::InquiryId.eq(inquiry_id))
            .order_by_asc(inquiry_vote::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// Record (or withdraw) one vote and decide when the quorum is reached or
    /// someone denies. Returns the decision when this vote made it, `None`
    /// when the inquiry is still open, and `Err`-free `Some(status)` via the
    /// second value when it was no longer pending.
    pub async fn record_vote(
        &self,
        inquiry_id: &str,
        voter: &str,
        vote: VoteRecord,
        required: usize,
        audit: Vec<AuditEntry>,
    ) -> Result<VoteResult, StoreError> {
        let _turn = self.write_turn().await;
        let txn = self.db.begin().await?;
        let mut find = inquiry::Entity::find_by_id(inquiry_id.to_owned());
        if self.backend() == DbBackend::Postgres {
            // Votes on one inquiry take turns, so two approvals cannot both
            // miss each other and leave a reached quorum undecided.
            find = find.lock_exclusive();
        }
        let Some(inq) = find.one(&txn).await? else {
            return Ok(VoteResult::NotFound);
        };
        if inq.status != "pending" {
            return Ok(VoteResult::Closed(inq.status));
        }
        exec(
            &txn,
            "DELETE FROM inquiry_votes WHERE inquiry_id = ? AND voter = ?",
            vec![inquiry_id.into(), voter.into()],
        )
        .await?;
        let (approve, response) = match &vote {
            VoteRecord::Approve(r) => (Some(true), r.clone()),
            VoteRecord::Deny(r) => (Some(false), r.clone()),
            VoteRecord::Withdraw => (None, Value::Null),
        };
        if let Some(approve) = approve {
            inquiry_vote::Entity::insert(inquiry_vote::ActiveModel {
                id: Set(new_id()),
                inquiry_id: Set(inquiry_id.to_owned()),
                voter: Set(voter.to_owned()),
                approve: Set(approve),
                response: Set(response.to_string()),
                at: Set(now_ms()),
            })
            .exec_without_returning(&txn)
            .await?;
        }
        insert_audit(&txn, &audit).await?;
        let votes = inquiry_vote::Entity::find()
            .filter(inquiry_vote::Column::InquiryId.eq(inquiry_id))
            .order_by_asc(inquiry_vote::Column::Id)
            .all(&txn)
            .await?;
        let deniers: Vec<&inquiry_vote::Model> = votes.iter().filter(|v| !v.approve).collect();
        let approvers: Vec<&inquiry_vote::Model> = votes.iter().filter(|v| v.approve).collect();
        let decision = if let Some(first) = deniers.first() {
            Some((
                Decision {
                    status: "denied".into(),
                    decided_by: deniers.iter().map(|v| v.voter.clone()).collect(),
                    response: serde_json::from_str(&first.response).unwrap_or(Value::Null),
                },
                "failed",
            ))
        } else if approvers.len() >= required.max(1) {
            let response = approvers
                .last()
                .and_then(|v| serde_json::from_str(&v.response).ok())
                .unwrap_or(Value::Null);
            Some((
                Decision {
                    status: "approved".into(),
                    decided_by: approvers.iter().map(|v| v.voter.clone()).collect(),
                    response,
                },
                "succeeded",
            ))
        } else {
            None
        };
        let result = match decision {
            Some((decision, exec_status)) => {
                let result = json!({
                    "response": decision.response,
                    "decision": decision.status,
                    "decided_by": decision.decided_by,
                });
                let error = (exec_status == "failed")
                    .then(|| format!("denied by {}", decision.decided_by.join(", ")));
                finish(&txn, &inq, &decision, exec_status, &result, error).await?;
                insert_audit(
                    &txn,
                    &[AuditEntry {
                        actor: voter.to_owned(),
                        kind: "inquiry.decided".into(),
                        subject: inq.id.clone(),
                        detail: json!({"decision": decision.status, "decided_by": decision.decided_by}),
                    }],
                )
                .await?;
                VoteResult::Decided(decision)
            }
            None => VoteResult::Open {
                approvals: approvers.len(),
                required: required.max(1),
            },
        };
        txn.commit().await?;
        Ok(result)
    }

    /// Expire pending inquiries whose ttl has passed: each ends with status
    /// `expired`, its execution with `timeout`. Returns their ids.
    pub async fn expire_inquiries(&self, now: i64) -> Result<Vec<String>, StoreError> {
        let due = inquiry::Entity::find()
            .filter(inquiry::Column::Status.eq("pending"))
            .filter(inquiry::Column::ExpiresAt.lte(now))
            .all(&self.db)
            .await?;
        let mut expired = Vec::new();
        for inq in due {
            let _turn = self.write_turn().await;
            let txn = self.db.begin().await?;
            let decision = Decision {
                status: "expired".into(),
                decided_by: Vec::new(),
                response: Value::Null,
            };
            let result = json!({"decision": "expired"});
            let error = Some("no decision before the inquiry's ttl ran out".to_owned());
            if finish(&txn, &inq, &decision, "timeout", &result, error).await? {
                insert_audit(
                    &txn,
                    &[AuditEntry {
                        actor: "squall".into(),
                        kind: "inquiry.decided".into(),
                        subject: inq.id.clone(),
                        detail: json!({"decision": "expired"}),
                    }],
                )
                .await?;
                expired.push(inq.id.clone());
            }
            txn.commit().await?;
        }
        Ok(expired)
    }

    /// Move a prompt from one state to another (`new` → `posting` claims the
    /// right to post it, so two nodes never post one prompt twice).
    pub async fn move_prompt(
        &self,
        id: &str,
        from: &str,
        to: &str,
        prompt: Option<(&Value, &str)>,
    ) -> Result<bool, StoreError> {
        let backend = self.backend();
        let now = now_ms();
        let _turn = self.write_turn().await;
        let rows = match prompt {
            Some((reference, key)) => self.db.execute_raw(Statement::from_sql_and_values(
                backend,
                placeholders(
                    backend,
                    "UPDATE inquiries SET prompt_state = ?, prompt_ref = ?, prompt_key = ?, updated_at = ? \
                     WHERE id = ? AND prompt_state = ?",
                ),
                [
                    to.into(),
                    reference.to_string().into(),
                    key.into(),
                    now.into(),
                    id.into(),
                    from.into(),
                ],
            )),
            None => self.db.execute_raw(Statement::from_sql_and_values(
                backend,
                placeholders(
                    backend,
                    "UPDATE inquiries SET prompt_state = ?, updated_at = ? WHERE id = ? AND prompt_state = ?",
                ),
                [to.into(), now.into(), id.into(), from.into()],
            )),
        }
        .await?
        .rows_affected();
        Ok(rows == 1)
    }
}

/// What recording a vote did.
#[derive(Debug, Clone, PartialEq)]
pub enum VoteResult {
    NotFound,
    /// The inquiry was already decided (its status).
    Closed(String),
    Open {
        approvals: usize,
        required: usize,
    },
    Decided(Decision),
}
