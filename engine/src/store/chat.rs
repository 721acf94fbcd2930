//! The chat outbox (everything squall says in chat, durably, in order per
//! channel, claimable by any node), the threads thread keys live in, and
//! timer state.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter,
    QueryOrder, QuerySelect, Statement, TransactionTrait,
};
use serde_json::Value;

use super::executions::placeholders;
use super::{Store, StoreError, chat_outbox};
use crate::execution::{ChatOrigin, new_id, now_ms};

/// What an outbox row says. Acks, results, progress, prompts and decisions
/// are rendered when they are delivered, from the state they report on;
/// replies and notices carry their message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxKind {
    /// "Running X as execution Y" (or its alias's ack format).
    Ack,
    /// The final message of an execution started from chat: held until the
    /// execution ends, released in the transaction that ends it.
    Result,
    /// An edit of the ack while the execution runs.
    Progress,
    /// An approval request.
    Prompt,
    /// The prompt's edit when the request is decided.
    Decision,
    /// An answer to a chat command.
    Reply,
    /// A notice an action posted (`chatops.post_message`).
    Notice,
}

impl OutboxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ack => "ack",
            Self::Result => "result",
            Self::Progress => "progress",
            Self::Prompt => "prompt",
            Self::Decision => "decision",
            Self::Reply => "reply",
            Self::Notice => "notice",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "ack" => Self::Ack,
            "result" => Self::Result,
            "progress" => Self::Progress,
            "prompt" => Self::Prompt,
            "decision" => Self::Decision,
            "reply" => Self::Reply,
            "notice" => Self::Notice,
            _ => return None,
        })
    }
}

/// One row to put in the outbox.
#[derive(Debug, Clone)]
pub struct NewOutboxRow {
    pub kind: OutboxKind,
    pub execution_id: Option<String>,
    pub inquiry_id: Option<String>,
    /// Known for answers to chat; `None` for notices and prompts named by a
    /// channel name, resolved by the node that delivers them.
    pub platform: Option<String>,
    pub channel: Option<String>,
    pub thread: Option<String>,
    /// How the sender named where it goes (`platform:room`, a name from
    /// `[chat.channels]`, a room id).
    pub target: String,
    pub message: Value,
    pub thread_key: Option<String>,
    /// The row whose sent message this one edits.
    pub edit_of: Option<String>,
    /// When it became deliverable, if earlier than its insertion: an answer
    /// about a state change sorts before what that change released (a
    /// "Canceling …" before the canceled result).
    pub ready_at: Option<i64>,
}

impl NewOutboxRow {
    /// A notice about `execution_id` for `target` (a channel name or
    /// `platform:room`), deliverable when stored.
    pub fn notice(
        execution_id: &str,
        target: &str,
        message: &Value,
        thread_key: Option<&str>,
    ) -> Self {
        Self {
            kind: OutboxKind::Notice,
            execution_id: Some(execution_id.to_owned()),
            inquiry_id: None,
            platform: None,
            channel: None,
            thread: None,
            target: target.to_owned(),
            message: message.clone(),
            thread_key: thread_key.map(str::to_owned),
            edit_of: None,
            ready_at: None,
        }
    }

    /// A row going back to where a chat command came from.
    pub fn to_origin(kind: OutboxKind, origin: &ChatOrigin, message: Value) -> Self {
        Self {
            kind,
            execution_id: None,
            inquiry_id: None,
            platform: Some(origin.platform.clone()),
            channel: Some(origin.channel.clone()),
            thread: origin.thread.clone(),
            target: format!("{}:{}", origin.platform, origin.channel),
            message,
            thread_key: None,
            edit_of: None,
            ready_at: None,
        }
    }
}

/// How a delivery attempt ended.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// Sent; where it went (platform, channel, thread, message id).
    Sent(Value),
    /// The platform refused it for good (its reason).
    Failed(String),
    /// Nothing to deliver any more (the edit target never went out, the
    /// request was decided before its prompt, ...).
    Skipped(String),
    /// Try again at this time (ms).
    Retry { at: i64, reason: String },
}

/// A row of `chat_outbox` waits for an earlier unsent row of its channel.
const BLOCKED: &str = "EXISTS (SELECT 1 FROM chat_outbox o WHERE o.platform = chat_outbox.platform \
     AND o.channel = chat_outbox.channel AND o.state IN ('new', 'sending') AND o.id <> chat_outbox.id \
     AND (o.ready_at < chat_outbox.ready_at OR (o.ready_at = chat_outbox.ready_at AND o.id < chat_outbox.id)))";

/// Statuses after which an execution never changes again.
const TERMINAL: &str = "('succeeded', 'failed', 'timeout', 'canceled', 'abandoned')";

/// Insert outbox rows inside a caller's transaction (rows ready now; results
/// held).
pub(crate) async fn insert_outbox<C: ConnectionTrait>(
    conn: &C,
    rows: Vec<NewOutboxRow>,
    now: i64,
) -> Result<Vec<String>, StoreError> {
    let mut ids = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(100) {
        let models: Vec<chat_outbox::ActiveModel> = chunk
            .iter()
            .map(|row| {
                let id = new_id();
                ids.push(id.clone());
                let held = row.kind == OutboxKind::Result;
                chat_outbox::ActiveModel {
                    id: Set(id),
                    execution_id: Set(row.execution_id.clone()),
                    target: Set(row.target.clone()),
                    message: Set(row.message.to_string()),
                    thread_key: Set(row.thread_key.clone()),
                    state: Set(if held { "held" } else { "new" }.into()),
                    sent_ref: Set(None),
                    error: Set(None),
                    created_at: Set(now),
                    updated_at: Set(now),
                    kind: Set(row.kind.as_str().into()),
                    platform: Set(row.platform.clone()),
                    channel: Set(row.channel.clone()),
                    thread: Set(row.thread.clone()),
                    inquiry_id: Set(row.inquiry_id.clone()),
                    edit_of: Set(row.edit_of.clone()),
                    ready_at: Set(row.ready_at.unwrap_or(now)),
                    attempts: Set(0),
                    next_attempt_at: Set(None),
                    claimed_by: Set(None),
                    lease_until: Set(None),
                }
            })
            .collect();
        chat_outbox::Entity::insert_many(models)
            .exec_without_returning(conn)
            .await?;
    }
    Ok(ids)
}

/// The outbox rows a new execution brings: an ack (when its chat command
/// wants one) and its held result. Workflow tasks answer through their
/// workflow, never on their own.
pub(crate) fn rows_for_execution(id: &str, context: &Value) -> Vec<NewOutboxRow> {
    if !context.get("workflow").is_none_or(Value::is_null) {
        return Vec::new();
    }
    let Some(origin) = context
        .get("chat")
        .filter(|c| !c.is_null())
        .and_then(|c| serde_json::from_value::<ChatOrigin>(c.clone()).ok())
    else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    for (wanted, kind) in [
        (origin.ack, OutboxKind::Ack),
        (origin.result, OutboxKind::Result),
    ] {
        if wanted {
            let mut row = NewOutboxRow::to_origin(kind, &origin, Value::Null);
            row.execution_id = Some(id.to_owned());
            rows.push(row);
        }
    }
    rows
}

/// The approval prompt of a new inquiry. `target` is the chat origin of
/// the execution that asks, or `{channel, thread_key}` naming a channel.
pub(crate) fn prompt_row(inquiry_id: &str, execution_id: &str, target: &Value) -> NewOutboxRow {
    let text = |key: &str| target.get(key).and_then(Value::as_str).map(str::to_owned);
    let platform = text("platform");
    let channel = text("channel").unwrap_or_default();
    NewOutboxRow {
        kind: OutboxKind::Prompt,
        execution_id: Some(execution_id.to_owned()),
        inquiry_id: Some(inquiry_id.to_owned()),
        target: match &platform {
            Some(p) => format!("{p}:{channel}"),
            None => channel.clone(),
        },
        channel: platform.is_some().then_some(channel),
        platform,
        thread: text("thread"),
        message: Value::Null,
        thread_key: text("thread_key"),
        edit_of: None,
        ready_at: None,
    }
}

/// Release the held results of executions that have ended: they become
/// deliverable, in the order they were released. Run in the transaction that
/// ends executions, and as a sweep by the delivery loop. Exactly once per
/// row: only `held` rows move.
pub(crate) async fn release_results<C: ConnectionTrait>(
    conn: &C,
    now: i64,
) -> Result<u64, StoreError> {
    let backend = conn.get_database_backend();
    let sql = placeholders(
        backend,
        &format!(
            "UPDATE chat_outbox SET state = 'new', ready_at = ?, updated_at = ? WHERE state = 'held' \
             AND EXISTS (SELECT 1 FROM executions e WHERE e.id = chat_outbox.execution_id \
             AND e.status IN {TERMINAL})"
        ),
    );
    Ok(conn
        .execute_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [now.into(), now.into()],
        ))
        .await?
        .rows_affected())
}

/// Queue the decision edit of an inquiry's prompt (when it had one).
pub(crate) async fn queue_decision<C: ConnectionTrait>(
    conn: &C,
    inquiry_id: &str,
    now: i64,
) -> Result<(), StoreError> {
    let backend = conn.get_database_backend();
    let sql = placeholders(
        backend,
        "INSERT INTO chat_outbox (id, execution_id, target, message, thread_key, state, created_at, \
         updated_at, kind, platform, channel, thread, inquiry_id, edit_of, ready_at, attempts) \
         SELECT ?, execution_id, target, 'null', NULL, 'new', ?, ?, 'decision', platform, channel, \
         thread, inquiry_id, id, ?, 0 FROM chat_outbox WHERE kind = 'prompt' AND inquiry_id = ? \
         AND NOT EXISTS (SELECT 1 FROM chat_outbox d WHERE d.kind = 'decision' AND d.inquiry_id = ?)",
    );
    conn.execute_raw(Statement::from_sql_and_values(
        backend,
        sql,
        [
            new_id().into(),
            now.into(),
            now.into(),
            now.into(),
            inquiry_id.into(),
            inquiry_id.into(),
        ],
    ))
    .await?;
    Ok(())
}

impl Store {
    /// Queue a chat notice (`chatops.post_message`); returns its id.
    pub async fn queue_chat_message(
        &self,
        execution_id: &str,
        target: &str,
        message: &Value,
        thread_key: Option<&str>,
    ) -> Result<String, StoreError> {
        self.queue_outbox(NewOutboxRow::notice(
            execution_id,
            target,
            message,
            thread_key,
        ))
        .await
    }

    /// Queue one outbox row, deliverable now; returns its id.
    pub async fn queue_outbox(&self, row: NewOutboxRow) -> Result<String, StoreError> {
        let _turn = self.write_turn().await;
        let ids = insert_outbox(&self.db, vec![row], now_ms()).await?;
        Ok(ids.into_iter().next().unwrap_or_default())
    }

    /// Queue a progress edit of an execution's ack, unless its result has
    /// been released already or an earlier progress edit is still unsent.
    pub async fn queue_progress(&self, execution_id: &str, text: &str) -> Result<bool, StoreError> {
        let backend = self.backend();
        let now = now_ms();
        let sql = placeholders(
            backend,
            "INSERT INTO chat_outbox (id, execution_id, target, message, thread_key, state, created_at, \
             updated_at, kind, platform, channel, thread, inquiry_id, edit_of, ready_at, attempts) \
             SELECT ?, execution_id, target, ?, NULL, 'new', ?, ?, 'progress', platform, channel, thread, \
             NULL, id, ?, 0 FROM chat_outbox a WHERE a.kind = 'ack' AND a.execution_id = ? \
             AND EXISTS (SELECT 1 FROM chat_outbox r WHERE r.kind = 'result' AND r.execution_id = ? AND r.state = 'held') \
             AND NOT EXISTS (SELECT 1 FROM chat_outbox p WHERE p.kind = 'progress' AND p.execution_id = ? \
             AND p.state IN ('new', 'sending'))",
        );
        let message = serde_json::json!({"text": text}).to_string();
        let rows = self
            .execute_write(
                false,
                sql,
                vec![
                    new_id().into(),
                    message.into(),
                    now.into(),
                    now.into(),
                    now.into(),
                    execution_id.into(),
                    execution_id.into(),
                    execution_id.into(),
                ],
            )
            .await?;
        Ok(rows == 1)
    }

    /// Run one write statement (`sql` with its placeholders already in the
    /// backend's form), in this process's write turn; returns the rows it
    /// changed. `lazy`: on the connection without a sync per commit.
    async fn execute_write(
        &self,
        lazy: bool,
        sql: String,
        values: Vec<sea_orm::Value>,
    ) -> Result<u64, StoreError> {
        let conn = if lazy { &self.lazy } else { &self.db };
        let _turn = self.write_turn().await;
        Ok(conn
            .execute_raw(Statement::from_sql_and_values(self.backend(), sql, values))
            .await?
            .rows_affected())
    }

    /// Release held results whose executions ended (the delivery loop's sweep).
    pub async fn release_results(&self) -> Result<u64, StoreError> {
        let _turn = self.write_turn().await;
        release_results(&self.db, now_ms()).await
    }

    pub async fn chat_message(&self, id: &str) -> Result<Option<chat_outbox::Model>, StoreError> {
        Ok(chat_outbox::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?)
    }

    /// Notices queued with one thread key, oldest first.
    pub async fn chat_messages_in_thread(
        &self,
        thread_key: &str,
    ) -> Result<Vec<chat_outbox::Model>, StoreError> {
        Ok(chat_outbox::Entity::find()
            .filter(chat_outbox::Column::ThreadKey.eq(thread_key))
            .filter(chat_outbox::Column::Kind.eq(OutboxKind::Notice.as_str()))
            .order_by_asc(chat_outbox::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// The outbox rows of one execution, oldest first.
    pub async fn chat_messages_of(
        &self,
        execution_id: &str,
    ) -> Result<Vec<chat_outbox::Model>, StoreError> {
        Ok(chat_outbox::Entity::find()
            .filter(chat_outbox::Column::ExecutionId.eq(execution_id))
            .order_by_asc(chat_outbox::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// Rows waiting to be sent, in delivery order.
    pub async fn chat_messages_to_send(&self) -> Result<Vec<chat_outbox::Model>, StoreError> {
        Ok(chat_outbox::Entity::find()
            .filter(chat_outbox::Column::State.eq("new"))
            .order_by_asc(chat_outbox::Column::ReadyAt)
            .order_by_asc(chat_outbox::Column::Id)
            .limit(100)
            .all(&self.db)
            .await?)
    }

    /// Rows due for delivery now on `platforms` (or naming a channel, to be
    /// resolved): new ones whose retry time has come, and ones whose
    /// deliverer's lease ran out. Oldest first (`ready_at`, id).
    pub async fn outbox_due(
        &self,
        platforms: &[&str],
        now: i64,
        limit: u64,
    ) -> Result<Vec<chat_outbox::Model>, StoreError> {
        let mut values: Vec<sea_orm::Value> = vec![now.into(), now.into()];
        let mut platform_filter = String::from("platform IS NULL");
        if !platforms.is_empty() {
            platform_filter.push_str(" OR platform IN (");
            platform_filter.push_str(&vec!["?"; platforms.len()].join(", "));
            platform_filter.push(')');
            values.extend(platforms.iter().map(|p| (*p).into()));
        }
        values.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
        let sql = placeholders(
            self.backend(),
            &format!(
                "SELECT * FROM chat_outbox WHERE ((state = 'new' AND (next_attempt_at IS NULL OR next_attempt_at <= ?)) \
                 OR (state = 'sending' AND (lease_until IS NULL OR lease_until < ?))) AND ({platform_filter}) \
                 AND NOT {BLOCKED} ORDER BY ready_at, id LIMIT ?"
            ),
        );
        Ok(chat_outbox::Entity::find()
            .from_raw_sql(Statement::from_sql_and_values(self.backend(), sql, values))
            .all(&self.db)
            .await?)
    }

    /// Rows not delivered yet (held results included), oldest first.
    pub async fn chat_messages_unsent(&self) -> Result<Vec<chat_outbox::Model>, StoreError> {
        Ok(chat_outbox::Entity::find()
            .filter(chat_outbox::Column::State.is_in(["new", "sending", "held"]))
            .order_by_asc(chat_outbox::Column::ReadyAt)
            .order_by_asc(chat_outbox::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// The earliest time a row waiting for a retry becomes due.
    pub async fn outbox_next_retry(&self, platforms: &[&str]) -> Result<Option<i64>, StoreError> {
        #[derive(FromQueryResult)]
        struct Next {
            at: Option<i64>,
        }
        let mut filter = String::from("platform IS NULL");
        if !platforms.is_empty() {
            filter.push_str(&format!(
                " OR platform IN ({})",
                vec!["?"; platforms.len()].join(", ")
            ));
        }
        let sql = placeholders(
            self.backend(),
            &format!(
                "SELECT MIN(next_attempt_at) AS at FROM chat_outbox WHERE state = 'new' \
                 AND next_attempt_at IS NOT NULL AND ({filter})"
            ),
        );
        let values: Vec<sea_orm::Value> = platforms.iter().map(|p| (*p).into()).collect();
        Ok(
            Next::find_by_statement(Statement::from_sql_and_values(self.backend(), sql, values))
                .one(&self.db)
                .await?
                .and_then(|n| n.at),
        )
    }

    /// Approval requests still waiting for a prompt that has no outbox row
    /// (asked before the outbox carried prompts): queue their prompts.
    pub async fn queue_missing_prompts(&self) -> Result<u64, StoreError> {
        let waiting = super::inquiry::Entity::find()
            .filter(super::inquiry::Column::PromptState.eq("new"))
            .filter(super::inquiry::Column::Status.eq("pending"))
            .all(&self.db)
            .await?;
        let mut rows = Vec::new();
        for inq in waiting {
            let has_row = chat_outbox::Entity::find()
                .filter(chat_outbox::Column::Kind.eq(OutboxKind::Prompt.as_str()))
                .filter(chat_outbox::Column::InquiryId.eq(inq.id.as_str()))
                .one(&self.db)
                .await?
                .is_some();
            let target = inq
                .target
                .as_deref()
                .and_then(|t| serde_json::from_str::<Value>(t).ok());
            if let (false, Some(target)) = (has_row, target) {
                rows.push(prompt_row(&inq.id, &inq.execution_id, &target));
            }
        }
        let n = rows.len() as u64;
        if n > 0 {
            let _turn = self.write_turn().await;
            insert_outbox(&self.db, rows, now_ms()).await?;
        }
        Ok(n)
    }

    /// Claim a row for delivery by `owner` until `lease_until`: it must be
    /// new (or its last deliverer's lease has run out), and no earlier row for
    /// the same channel may still be unsent, so one channel's messages go out
    /// in order whichever nodes deliver them. A resolved `platform`/`channel`
    /// is recorded for rows that named a channel by name.
    pub async fn claim_outbox(
        &self,
        id: &str,
        owner: &str,
        lease_until: i64,
        resolved: Option<(&str, &str)>,
    ) -> Result<bool, StoreError> {
        let backend = self.backend();
        let now = now_ms();
        let sql = placeholders(
            backend,
            &format!(
                "UPDATE chat_outbox SET state = 'sending', claimed_by = ?, lease_until = ?, \
                 attempts = attempts + 1, updated_at = ?, platform = COALESCE(platform, ?), \
                 channel = COALESCE(channel, ?) WHERE id = ? \
                 AND ((state = 'new' AND (next_attempt_at IS NULL OR next_attempt_at <= ?)) \
                 OR (state = 'sending' AND (lease_until IS NULL OR lease_until < ?))) AND NOT {BLOCKED}"
            ),
        );
        let (platform, channel) = resolved.unzip();
        let rows = self
            .execute_write(
                true,
                sql,
                vec![
                    owner.into(),
                    lease_until.into(),
                    now.into(),
                    platform.map(str::to_owned).into(),
                    channel.map(str::to_owned).into(),
                    id.into(),
                    now.into(),
                    now.into(),
                ],
            )
            .await?;
        Ok(rows == 1)
    }

    /// Record how a claimed row's delivery ended. False when the claim was
    /// lost meanwhile (another node took it over after the lease ran out).
    pub async fn finish_outbox(
        &self,
        id: &str,
        owner: &str,
        outcome: &Delivery,
    ) -> Result<bool, StoreError> {
        let backend = self.backend();
        let now = now_ms();
        let (state, sent_ref, error, next): (&str, Option<String>, Option<String>, Option<i64>) =
            match outcome {
                Delivery::Sent(reference) => ("sent", Some(reference.to_string()), None, None),
                Delivery::Failed(reason) => ("failed", None, Some(reason.clone()), None),
                Delivery::Skipped(reason) => ("skipped", None, Some(reason.clone()), None),
                Delivery::Retry { at, reason } => ("new", None, Some(reason.clone()), Some(*at)),
            };
        let sql = placeholders(
            backend,
            "UPDATE chat_outbox SET state = ?, sent_ref = COALESCE(?, sent_ref), error = ?, \
             next_attempt_at = ?, lease_until = NULL, updated_at = ? \
             WHERE id = ? AND state = 'sending' AND claimed_by = ?",
        );
        let rows = self
            .execute_write(
                true,
                sql,
                vec![
                    state.into(),
                    sent_ref.into(),
                    error.into(),
                    next.into(),
                    now.into(),
                    id.into(),
                    owner.into(),
                ],
            )
            .await?;
        Ok(rows == 1)
    }

    /// A single node starting up: rows an earlier process was sending when
    /// it stopped are sent again (with the same idempotency key, so a
    /// platform that saw the first attempt does not show it twice).
    pub async fn release_stale_outbox(&self, owner: &str) -> Result<u64, StoreError> {
        let sql = placeholders(
            self.backend(),
            "UPDATE chat_outbox SET state = 'new', lease_until = NULL, updated_at = ? \
             WHERE state = 'sending' AND (claimed_by IS NULL OR claimed_by <> ?)",
        );
        let _turn = self.write_turn().await;
        let txn = self.db.begin().await?;
        let now = now_ms();
        let moved = txn
            .execute_raw(Statement::from_sql_and_values(
                self.backend(),
                sql,
                [now.into(), owner.into()],
            ))
            .await?
            .rows_affected();
        release_results(&txn, now).await?;
        txn.commit().await?;
        Ok(moved)
    }

    /// Move a notice between states (`chatops.post_message` gives up on
    /// one nobody delivered in time).
    pub async fn move_chat_message(
        &self,
        id: &str,
        from: &str,
        to: &str,
        sent_ref: Option<&Value>,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        let sql = placeholders(
            self.backend(),
            "UPDATE chat_outbox SET state = ?, sent_ref = COALESCE(?, sent_ref), error = ?, \
             updated_at = ? WHERE id = ? AND state = ?",
        );
        let rows = self
            .execute_write(
                false,
                sql,
                vec![
                    to.into(),
                    sent_ref.map(ToString::to_string).into(),
                    error.map(str::to_owned).into(),
                    now_ms().into(),
                    id.into(),
                    from.into(),
                ],
            )
            .await?;
        Ok(rows == 1)
    }
}

#[derive(FromQueryResult)]
struct RootRow {
    root_message_id: String,
}

#[derive(FromQueryResult)]
struct DueRow {
    last_due: i64,
}

impl Store {
    /// The root message of a thread key in one channel, if it has one.
    pub async fn chat_thread(&self, key: &str) -> Result<Option<String>, StoreError> {
        let sql = placeholders(
            self.backend(),
            "SELECT root_message_id FROM chat_threads WHERE key = ?",
        );
        Ok(RootRow::find_by_statement(Statement::from_sql_and_values(
            self.backend(),
            sql,
            [key.into()],
        ))
        .one(&self.db)
        .await?
        .map(|r| r.root_message_id))
    }

    /// Remember the first message of a thread key (the first writer wins).
    pub async fn set_chat_thread(&self, key: &str, root: &str) -> Result<(), StoreError> {
        let sql = placeholders(
            self.backend(),
            "INSERT INTO chat_threads (key, root_message_id, created_at) VALUES (?, ?, ?) \
             ON CONFLICT (key) DO NOTHING",
        );
        let _turn = self.write_turn().await;
        self.db
            .execute_raw(Statement::from_sql_and_values(
                self.backend(),
                sql,
                [key.into(), root.into(), now_ms().into()],
            ))
            .await?;
        Ok(())
    }

    /// Whether a signed request's `token` is new (and remember it for
    /// `window` seconds): false for a replay, whichever node saw it first.
    pub async fn first_use_of(
        &self,
        token: &str,
        now: i64,
        window: i64,
    ) -> Result<bool, StoreError> {
        let _turn = self.write_turn().await;
        if rand::random::<u8>() == 0 {
            // Now and then, forget what is past every window.
            self.db
                .execute_raw(Statement::from_sql_and_values(
                    self.backend(),
                    placeholders(
                        self.backend(),
                        "DELETE FROM webhook_replays WHERE seen_at < ?",
                    ),
                    [(now - window.max(86_400)).into()],
                ))
                .await?;
        }
        let sql = placeholders(
            self.backend(),
            "INSERT INTO webhook_replays (token, seen_at) VALUES (?, ?) ON CONFLICT (token) \
             DO UPDATE SET seen_at = excluded.seen_at WHERE webhook_replays.seen_at < ?",
        );
        let res = self
            .db
            .execute_raw(Statement::from_sql_and_values(
                self.backend(),
                sql,
                [token.into(), now.into(), (now - window).into()],
            ))
            .await?;
        Ok(res.rows_affected() == 1)
    }

    /// The due time a timer rule last fired for.
    pub async fn timer_last_due(&self, rule: &str) -> Result<Option<i64>, StoreError> {
        let sql = placeholders(
            self.backend(),
            "SELECT last_due FROM timer_state WHERE rule = ?",
        );
        Ok(DueRow::find_by_statement(Statement::from_sql_and_values(
            self.backend(),
            sql,
            [rule.into()],
        ))
        .one(&self.db)
        .await?
        .map(|r| r.last_due))
    }

    /// Claim the right to fire `rule` for `due`: succeeds once per due time,
    /// whichever node (or restart) asks first.
    pub async fn claim_timer(
        &self,
        rule: &str,
        previous: Option<i64>,
        due: i64,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let _turn = self.write_turn().await;
        let rows = match previous {
            Some(prev) => self
                .db
                .execute_raw(Statement::from_sql_and_values(
                    self.backend(),
                    placeholders(
                        self.backend(),
                        "UPDATE timer_state SET last_due = ?, updated_at = ? WHERE rule = ? AND last_due = ?",
                    ),
                    [due.into(), now.into(), rule.into(), prev.into()],
                ))
                .await?
                .rows_affected(),
            None => self
                .db
                .execute_raw(Statement::from_sql_and_values(
                    self.backend(),
                    placeholders(
                        self.backend(),
                        "INSERT INTO timer_state (rule, last_due, updated_at) VALUES (?, ?, ?) \
                         ON CONFLICT (rule) DO NOTHING",
                    ),
                    [rule.into(), due.into(), now.into()],
                ))
                .await?
                .rows_affected(),
        };
        Ok(rows == 1)
    }
}
