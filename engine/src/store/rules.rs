//! Rules enabled or disabled at run time (`rule_states`): they override the
//! pack files' `enabled` until changed again.

use std::collections::BTreeMap;

use sea_orm::{ConnectionTrait, Statement, TransactionTrait, Value};

use super::executions::placeholders;
use super::{AuditEntry, Store, StoreError, insert_audit};
use crate::execution::now_ms;

impl Store {
    /// Every run-time rule state, by rule reference.
    pub async fn rule_states(&self) -> Result<BTreeMap<String, bool>, StoreError> {
        let rows = self
            .connection()
            .query_all_raw(Statement::from_string(
                self.backend(),
                "SELECT rule, enabled FROM rule_states",
            ))
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("", "rule")?, row.try_get("", "enabled")?)))
            .collect()
    }

    /// Record a rule's state and its audit row in one commit.
    pub async fn set_rule_state(
        &self,
        rule: &str,
        enabled: bool,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        let backend = self.backend();
        let now = now_ms();
        let sql = placeholders(
            backend,
            "INSERT INTO rule_states (rule, enabled, updated_at, updated_by) VALUES (?, ?, ?, ?) \
             ON CONFLICT (rule) DO UPDATE SET enabled = excluded.enabled, \
             updated_at = excluded.updated_at, updated_by = excluded.updated_by",
        );
        let values: Vec<Value> = vec![
            rule.into(),
            enabled.into(),
            now.into(),
            audit.actor.clone().into(),
        ];
        let _turn = self.write_turn().await;
        let txn = self.connection().begin().await?;
        txn.execute_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
        insert_audit(&txn, &[audit], now).await?;
        txn.commit().await?;
        Ok(())
    }
}
