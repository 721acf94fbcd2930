//! Persistence: one `Store` over sea-orm for SQLite (embedded, WAL) and
//! PostgreSQL. It owns the SQL; callers speak in domain terms (claim, complete,
//! recover) and never build queries themselves.

mod chat;
mod entities;
mod events;
mod executions;
mod inquiries;
mod kv;
mod rules;
mod workflows;

use std::sync::Arc;
use std::time::Duration;

use sea_orm::sea_query::OnConflict;
use sea_orm::sqlx::sqlite::SqliteSynchronous;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement, TransactionTrait,
};
use sha2::{Digest, Sha256};

use squall_migrations::{Migrator, MigratorTrait};

pub use chat::{Delivery, NewOutboxRow, OutboxKind};
pub use entities::{
    api_key, audit, chat_outbox, execution, inquiry, inquiry_vote, kv_pair, rule_enforcement,
    trigger_instance, workflow_task,
};
pub use events::{Event, OUTPUT, OutputLine};
pub use executions::{CancelOutcome, Completion, ExecutionFilter, NewExecution, RecoveryReport};
pub use inquiries::{Decision, NewInquiry, VoteRecord, VoteResult};
pub use kv::{KvVersion, KvWrite};
pub use workflows::{ACTIVE_STATUSES, ChildState};

use crate::execution::{new_id, now_ms};

/// Errors from the database layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sea_orm::DbErr),
    #[error("invalid database URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("stored JSON in {what} is corrupt: {source}")]
    CorruptJson {
        what: &'static str,
        source: serde_json::Error,
    },
}

/// A new trigger instance, as written by the intake.
#[derive(Debug, Clone)]
pub struct NewTriggerInstance {
    pub id: String,
    pub trigger: String,
    pub payload: serde_json::Value,
    pub source: String,
    pub occurred_at: i64,
    /// Secret values the payload may carry (`crate::secrets`).
    pub secrets: crate::secrets::Secrets,
}

/// A rule enforcement record: one per rule that matched a trigger instance.
#[derive(Debug, Clone)]
pub struct NewEnforcement {
    pub id: String,
    pub rule: String,
    pub trigger_instance_id: String,
    pub execution_id: Option<String>,
    pub failure_reason: Option<String>,
}

/// Everything one intake commit writes, atomically.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    pub trigger_instances: Vec<NewTriggerInstance>,
    pub enforcements: Vec<NewEnforcement>,
    pub executions: Vec<NewExecution>,
    pub completions: Vec<Completion>,
    pub audit: Vec<AuditEntry>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.trigger_instances.is_empty()
            && self.enforcements.is_empty()
            && self.executions.is_empty()
            && self.completions.is_empty()
            && self.audit.is_empty()
    }
}

/// One append-only audit row. `detail` must already have secrets masked.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub actor: String,
    pub kind: String,
    pub subject: String,
    pub detail: serde_json::Value,
}

/// Append audit rows inside a transaction (batched like every insert).
pub(crate) async fn insert_audit(
    txn: &sea_orm::DatabaseTransaction,
    entries: &[AuditEntry],
    now: i64,
) -> Result<(), StoreError> {
    for chunk in shaped_chunks(entries, txn.get_database_backend(), INSERT_CHUNK) {
        let rows = chunk.iter().map(|a| audit::ActiveModel {
            id: Set(new_id()),
            at: Set(now),
            actor: Set(a.actor.clone()),
            kind: Set(a.kind.clone()),
            subject: Set(a.subject.clone()),
            detail: Set(a.detail.to_string()),
        });
        audit::Entity::insert_many(rows)
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}

/// Rows per multi-row INSERT: keeps every statement under SQLite's bound
/// variable limit (32,766) for the widest table.
const INSERT_CHUNK: usize = 500;

/// Split rows into statement-sized chunks. On PostgreSQL, chunks come in a few
/// fixed sizes (16, then powers of two) so the driver's prepared statements
/// are reused, and stay small: the driver does not set TCP_NODELAY, and a
/// message longer than one TCP segment stalls ~40 ms on the peer's delayed
/// ACK (measured: 128-row batches took 48 ms, 16-row chunks 5 ms in total).
pub(crate) fn shaped_chunks<T>(items: &[T], backend: DbBackend, max: usize) -> Vec<&[T]> {
    if backend != DbBackend::Postgres {
        return items.chunks(max).collect();
    }
    let mut out = Vec::new();
    let mut rest = items;
    let mut size = max.min(16).next_power_of_two();
    while !rest.is_empty() {
        while size > rest.len() {
            size /= 2;
        }
        let (chunk, tail) = rest.split_at(size);
        out.push(chunk);
        rest = tail;
    }
    out
}

/// The database behind squall.
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    /// SQLite allows one writer; when two connections of this process collide,
    /// SQLite's busy handler sleeps for up to 100 ms. Writers of this process
    /// queue here instead. Unused on PostgreSQL.
    sqlite_writer: Option<Arc<tokio::sync::Mutex<()>>>,
    /// For writes that need not survive a power loss because they are
    /// redone when lost (claims of chat outbox rows and their delivery
    /// marks: a lost one means a resend with the same idempotency key). On
    /// SQLite a connection without a sync per commit; on PostgreSQL `db`.
    lazy: DatabaseConnection,
}

impl Store {
    /// Connect and bring the schema up to date. `url` is `sqlite://path` (the
    /// file is created) or `postgres://...`.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        // WAL lets readers run beside the writer; FULL syncs every commit so
        // an accepted webhook survives power loss, and the intake batches
        // commits so that costs one fsync per batch, not per request.
        // An in-memory database is private to its connection: no second one.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if !in_memory {
            // Migrate on a connection of its own, closed before the pool
            // opens: a pooled connection that saw the old schema would have
            // statements prepared against it (SQLite hands back a row shorter
            // than its `RETURNING *` after a column was added; PostgreSQL
            // refuses a cached plan whose result type changed).
            let migrator = Database::connect(options(url, 1, SqliteSynchronous::Full)?).await?;
            Migrator::up(&migrator, None).await?;
            migrator.close().await?;
        }
        let db = Database::connect(options(url, 16, SqliteSynchronous::Full)?).await?;
        if in_memory {
            Migrator::up(&db, None).await?;
        }
        let sqlite = db.get_database_backend() == DbBackend::Sqlite;
        let sqlite_writer = sqlite.then(|| Arc::new(tokio::sync::Mutex::new(())));
        let lazy = if sqlite && !in_memory {
            // WAL with NORMAL: a commit is not synced on its own; the next
            // synced commit (any FULL one) makes it durable too.
            Database::connect(options(url, 1, SqliteSynchronous::Normal)?).await?
        } else {
            db.clone()
        };
        Ok(Store {
            db,
            sqlite_writer,
            lazy,
        })
    }

    /// Hold this while writing (see `sqlite_writer`).
    pub(crate) async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.sqlite_writer {
            Some(lock) => Some(lock.lock().await),
            None => None,
        }
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// SQLite: one node by construction (whatever a dead process held is
    /// this process's to recover at start).
    pub fn is_single_node(&self) -> bool {
        self.backend() == DbBackend::Sqlite
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Write a whole intake batch in one transaction: nothing of it is visible
    /// or durable unless all of it is.
    pub async fn write_batch(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let _turn = self.write_turn().await;
        let txn = self.db.begin().await?;
        let now = now_ms();
        insert_new(&txn, batch, now).await?;
        let applied = executions::apply_completions(&txn, &batch.completions, now).await?;
        // A completion from a node that lost its lease is not stored, and
        // neither is what it causes (its notices, the rule firings on its
        // end): the run that is stored causes its own.
        let mut notices: Vec<NewOutboxRow> = Vec::new();
        for completion in batch.completions.iter().filter(|c| applied.contains(&c.id)) {
            notices.extend(completion.notices.iter().cloned());
            insert_new(&txn, &completion.follow_up, now).await?;
        }
        if !notices.is_empty() {
            chat::insert_outbox(&txn, notices, now).await?;
        }
        if !batch.completions.is_empty() {
            // The final chat message of what just ended becomes deliverable
            // in the same commit as the end itself.
            chat::release_results(&txn, now).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Append audit rows on their own (refused votes, control requests).
    pub async fn append_audit(&self, entries: &[AuditEntry]) -> Result<(), StoreError> {
        self.write_batch(&WriteBatch {
            audit: entries.to_vec(),
            ..WriteBatch::default()
        })
        .await
    }
}

/// Insert what `batch` creates (trigger instances, enforcements, executions,
/// audit rows); its completions are applied by the caller.
async fn insert_new(
    txn: &sea_orm::DatabaseTransaction,
    batch: &WriteBatch,
    now: i64,
) -> Result<(), StoreError> {
    let backend = txn.get_database_backend();
    for chunk in shaped_chunks(&batch.trigger_instances, backend, INSERT_CHUNK) {
        let rows = chunk.iter().map(|t| trigger_instance::ActiveModel {
            id: Set(t.id.clone()),
            trigger: Set(t.trigger.clone()),
            payload: Set(t.payload.to_string()),
            source: Set(t.source.clone()),
            occurred_at: Set(t.occurred_at),
            secrets: Set(t.secrets.to_stored()),
        });
        trigger_instance::Entity::insert_many(rows)
            .exec_without_returning(txn)
            .await?;
    }
    for chunk in shaped_chunks(&batch.enforcements, backend, INSERT_CHUNK) {
        let rows = chunk.iter().map(|e| rule_enforcement::ActiveModel {
            id: Set(e.id.clone()),
            rule: Set(e.rule.clone()),
            trigger_instance_id: Set(e.trigger_instance_id.clone()),
            execution_id: Set(e.execution_id.clone()),
            status: Set(if e.failure_reason.is_some() {
                "failed".into()
            } else {
                "succeeded".into()
            }),
            failure_reason: Set(e.failure_reason.clone()),
            created_at: Set(now),
        });
        rule_enforcement::Entity::insert_many(rows)
            .exec_without_returning(txn)
            .await?;
    }
    executions::insert_executions(txn, &batch.executions, now).await?;
    insert_audit(txn, &batch.audit, now).await
}

impl Store {
    /// Audit rows about one subject, oldest first.
    pub async fn audit_for(&self, subject: &str) -> Result<Vec<audit::Model>, StoreError> {
        Ok(audit::Entity::find()
            .filter(audit::Column::Subject.eq(subject))
            .order_by_asc(audit::Column::Id)
            .all(&self.db)
            .await?)
    }

    pub async fn get_trigger_instance(
        &self,
        id: &str,
    ) -> Result<Option<trigger_instance::Model>, StoreError> {
        Ok(trigger_instance::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?)
    }

    /// Rule enforcements recorded for one trigger instance.
    pub async fn enforcements_for_trigger(
        &self,
        trigger_instance_id: &str,
    ) -> Result<Vec<rule_enforcement::Model>, StoreError> {
        Ok(rule_enforcement::Entity::find()
            .filter(rule_enforcement::Column::TriggerInstanceId.eq(trigger_instance_id))
            .order_by_asc(rule_enforcement::Column::Id)
            .all(&self.db)
            .await?)
    }

    pub async fn count_trigger_instances(&self) -> Result<u64, StoreError> {
        self.count("SELECT COUNT(*) AS n FROM trigger_instances")
            .await
    }

    /// Trigger instances of one trigger type.
    pub async fn count_trigger_instances_of(&self, trigger: &str) -> Result<u64, StoreError> {
        let sql = executions::placeholders(
            self.backend(),
            "SELECT COUNT(*) AS n FROM trigger_instances WHERE trigger = ?",
        );
        self.count_stmt(Statement::from_sql_and_values(
            self.backend(),
            sql,
            [trigger.into()],
        ))
        .await
    }

    async fn count(&self, sql: &str) -> Result<u64, StoreError> {
        self.count_stmt(Statement::from_string(self.backend(), sql.to_owned()))
            .await
    }

    async fn count_stmt(&self, stmt: Statement) -> Result<u64, StoreError> {
        let row = self.db.query_one_raw(stmt).await?;
        let n: i64 = match row {
            Some(row) => row.try_get("", "n")?,
            None => 0,
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Create an API key; returns (key id, plaintext key). Only a hash is
    /// stored: the plaintext exists once, in this return value.
    pub async fn create_api_key(&self, name: &str) -> Result<(String, String), StoreError> {
        let key = format!("sq_{}", hex::encode(rand::random::<[u8; 24]>()));
        let id = new_id();
        let _turn = self.write_turn().await;
        api_key::Entity::insert(api_key::ActiveModel {
            id: Set(id.clone()),
            name: Set(name.to_owned()),
            key_hash: Set(hash_api_key(&key)),
            enabled: Set(true),
            created_at: Set(now_ms()),
        })
        .on_conflict(
            OnConflict::column(api_key::Column::KeyHash)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&self.db)
        .await?;
        Ok((id, key))
    }

    /// The key's name when it exists and is enabled.
    pub async fn verify_api_key(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(api_key::Entity::find()
            .filter(api_key::Column::KeyHash.eq(hash_api_key(key)))
            .filter(api_key::Column::Enabled.eq(true))
            .one(&self.db)
            .await?
            .map(|k| k.name))
    }

    pub async fn count_api_keys(&self) -> Result<u64, StoreError> {
        self.count("SELECT COUNT(*) AS n FROM api_keys").await
    }

    /// Every API key (hashes only), oldest first.
    pub async fn list_api_keys(&self) -> Result<Vec<api_key::Model>, StoreError> {
        Ok(api_key::Entity::find()
            .order_by_asc(api_key::Column::CreatedAt)
            .order_by_asc(api_key::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// Disable the key with this id, or the enabled keys with this name.
    /// Returns the keys that were enabled and are disabled now.
    pub async fn revoke_api_keys(
        &self,
        id_or_name: &str,
    ) -> Result<Vec<api_key::Model>, StoreError> {
        let _turn = self.write_turn().await;
        let txn = self.db.begin().await?;
        let by_id = api_key::Entity::find_by_id(id_or_name.to_owned())
            .filter(api_key::Column::Enabled.eq(true))
            .all(&txn)
            .await?;
        let keys = if by_id.is_empty() {
            api_key::Entity::find()
                .filter(api_key::Column::Name.eq(id_or_name))
                .filter(api_key::Column::Enabled.eq(true))
                .all(&txn)
                .await?
        } else {
            by_id
        };
        for key in &keys {
            api_key::Entity::update_many()
                .col_expr(
                    api_key::Column::Enabled,
                    sea_orm::sea_query::Expr::value(false),
                )
                .filter(api_key::Column::Id.eq(key.id.clone()))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(keys)
    }

    /// Audit rows matching `filter`, newest first.
    pub async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<audit::Model>, StoreError> {
        let mut query = audit::Entity::find();
        if let Some(actor) = &filter.actor {
            query = query.filter(audit::Column::Actor.eq(actor.clone()));
        }
        if let Some(kind) = &filter.kind {
            // `execution` matches every `execution.*` kind.
            query = query.filter(
                sea_orm::Condition::any()
                    .add(audit::Column::Kind.eq(kind.clone()))
                    .add(audit::Column::Kind.starts_with(format!("{kind}."))),
            );
        }
        if let Some(subject) = &filter.subject {
            query = query.filter(audit::Column::Subject.eq(subject.clone()));
        }
        if let Some(since) = filter.since {
            query = query.filter(audit::Column::At.gte(since));
        }
        if let Some(until) = filter.until {
            query = query.filter(audit::Column::At.lt(until));
        }
        Ok(query
            .order_by_desc(audit::Column::At)
            .order_by_desc(audit::Column::Id)
            .limit(filter.limit)
            .all(&self.db)
            .await?)
    }
}

/// Which audit rows to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    /// A kind (`execution.cancel`) or a family (`execution`).
    pub kind: Option<String>,
    pub subject: Option<String>,
    /// Rows at or after this time (ms).
    pub since: Option<i64>,
    /// Rows before this time (ms).
    pub until: Option<i64>,
    pub limit: u64,
}

/// API keys are random 192-bit tokens, so a plain SHA-256 is enough to make a
/// leaked table useless (no dictionary to attack).
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Accept `sqlite:path`, `sqlite://path` and `postgres(ql)://`; create SQLite
/// files on first use.
/// Pool options for `url`; `synchronous` applies to SQLite only.
fn options(
    url: &str,
    max_connections: u32,
    synchronous: SqliteSynchronous,
) -> Result<ConnectOptions, StoreError> {
    let mut opts = ConnectOptions::new(normalise_url(url)?);
    opts.sqlx_logging(false)
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(30));
    opts.map_sqlx_sqlite_opts(move |o| {
        o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true)
    });
    Ok(opts)
}

fn normalise_url(url: &str) -> Result<String, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(url.to_owned());
    }
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return Err(StoreError::BadUrl {
            url: url.to_owned(),
            reason: "expected sqlite://PATH or postgres://USER@HOST/DB".into(),
        });
    };
    if rest.contains("mode=") || rest == ":memory:" || rest.starts_with("::memory:") {
        return Ok(url.to_owned());
    }
    let path = rest.trim_start_matches("//");
    let sep = if path.contains('?') { '&' } else { '?' };
    Ok(format!("sqlite://{path}{sep}mode=rwc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_chunks_come_in_few_fixed_sizes() {
        let rows: Vec<u32> = (0..300).collect();
        let sizes: Vec<usize> = shaped_chunks(&rows, DbBackend::Postgres, 500)
            .iter()
            .map(|c| c.len())
            .collect();
        assert_eq!(sizes.len(), 20);
        assert_eq!(sizes.iter().sum::<usize>(), 300);
        assert!(sizes.iter().all(|s| [16, 8, 4].contains(s)), "{sizes:?}");
        let sqlite: Vec<usize> = shaped_chunks(&rows, DbBackend::Sqlite, 500)
            .iter()
            .map(|c| c.len())
            .collect();
        assert_eq!(sqlite, vec![300]);
    }
}
