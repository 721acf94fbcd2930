//! The event log (`/api/v1/stream`): read in id order, output lines appended
//! by workers, old events purged. State-change events are written by
//! database triggers (migration `m20261207_000007_events`).

use sea_orm::{ConnectionTrait, Statement, Value};

use super::executions::placeholders;
use super::{INSERT_CHUNK, Store, StoreError, shaped_chunks};

/// One stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Durable and increasing: what a client resumes from.
    pub id: i64,
    /// When it happened (ms since the epoch, the writer's clock).
    pub at: i64,
    pub kind: String,
    /// The id of the execution, inquiry, trigger instance or chat message.
    pub subject: String,
    pub data: serde_json::Value,
}

/// One line a run wrote, as it wrote it (secrets already masked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    pub stream: &'static str,
    pub text: String,
    pub at: i64,
}

/// The kind of an output line event.
pub const OUTPUT: &str = "execution.output";

impl Store {
    /// Events after `after`, oldest first, at most `limit`; only those about
    /// `subject` when given.
    pub async fn events_after(
        &self,
        after: i64,
        limit: u64,
        subject: Option<&str>,
    ) -> Result<Vec<Event>, StoreError> {
        let backend = self.backend();
        let mut values: Vec<Value> = vec![after.into()];
        let filter = match subject {
            Some(s) => {
                values.push(s.into());
                " AND subject = ?"
            }
            None => "",
        };
        values.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
        let sql = placeholders(
            backend,
            &format!(
                "SELECT id, at, kind, subject, data FROM events WHERE id > ?{filter} ORDER BY id LIMIT ?"
            ),
        );
        let rows = self
            .connection()
            .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
        rows.iter()
            .map(|row| {
                let data: String = row.try_get("", "data")?;
                Ok(Event {
                    id: row.try_get("", "id")?,
                    at: row.try_get("", "at")?,
                    kind: row.try_get("", "kind")?,
                    subject: row.try_get("", "subject")?,
                    data: serde_json::from_str(&data).map_err(|source| {
                        StoreError::CorruptJson {
                            what: "an event",
                            source,
                        }
                    })?,
                })
            })
            .collect()
    }

    /// The newest event id (0 when there is none).
    pub async fn last_event_id(&self) -> Result<i64, StoreError> {
        let backend = self.backend();
        let row = self
            .connection()
            .query_one_raw(Statement::from_string(
                backend,
                "SELECT COALESCE(MAX(id), 0) AS id FROM events",
            ))
            .await?;
        Ok(match row {
            Some(row) => row.try_get("", "id")?,
            None => 0,
        })
    }

    /// Append output lines of a running execution, in order, in one commit.
    pub async fn append_output(
        &self,
        execution_id: &str,
        lines: &[OutputLine],
    ) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        let backend = self.backend();
        let _turn = self.write_turn().await;
        let txn = sea_orm::TransactionTrait::begin(&self.lazy).await?;
        for chunk in shaped_chunks(lines, backend, INSERT_CHUNK) {
            let rows = vec!["(?, ?, ?, ?)"; chunk.len()].join(", ");
            let sql = placeholders(
                backend,
                &format!("INSERT INTO events (at, kind, subject, data) VALUES {rows}"),
            );
            let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 4);
            for line in chunk {
                values.push(line.at.into());
                values.push(OUTPUT.into());
                values.push(execution_id.into());
                values.push(
                    serde_json::json!({"stream": line.stream, "line": line.text})
                        .to_string()
                        .into(),
                );
            }
            txn.execute_raw(Statement::from_sql_and_values(backend, sql, values))
                .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Delete events older than `before` (ms); returns how many went.
    pub async fn purge_events_before(&self, before: i64) -> Result<u64, StoreError> {
        let backend = self.backend();
        // Ids increase with time: find the first event to keep by walking
        // from the oldest, then delete everything below it by key.
        let sql = placeholders(
            backend,
            "SELECT id FROM events WHERE at >= ? ORDER BY id LIMIT 1",
        );
        let keep = self
            .connection()
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [before.into()],
            ))
            .await?;
        let (sql, values): (String, Vec<Value>) = match keep {
            Some(row) => {
                let id: i64 = row.try_get("", "id")?;
                (
                    placeholders(backend, "DELETE FROM events WHERE id < ?"),
                    vec![id.into()],
                )
            }
            None => (
                placeholders(backend, "DELETE FROM events WHERE at < ?"),
                vec![before.into()],
            ),
        };
        let _turn = self.write_turn().await;
        Ok(self
            .connection()
            .execute_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?
            .rows_affected())
    }
}
