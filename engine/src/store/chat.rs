//! Chat notices queued by actions, the threads they go to, and timer state.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter,
    QueryOrder, QuerySelect, Statement,
};
use serde_json::Value;

use super::executions::placeholders;
use super::{Store, StoreError, chat_outbox};
use crate::execution::{new_id, now_ms};

#[derive(FromQueryResult)]
struct RootRow {
    root_message_id: String,
}

#[derive(FromQueryResult)]
struct DueRow {
    last_due: i64,
}

impl Store {
    /// Queue a chat notice; returns its id.
    pub async fn queue_chat_message(
        &self,
        execution_id: &str,
        target: &str,
        message: &Value,
        thread_key: Option<&str>,
    ) -> Result<String, StoreError> {
        let id = new_id();
        let now = now_ms();
        let _turn = self.write_turn().await;
        chat_outbox::Entity::insert(chat_outbox::ActiveModel {
            id: Set(id.clone()),
            execution_id: Set(Some(execution_id.to_owned())),
            target: Set(target.to_owned()),
            message: Set(message.to_string()),
            thread_key: Set(thread_key.map(str::to_owned)),
            state: Set("new".into()),
            sent_ref: Set(None),
            error: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .exec_without_returning(&self.db)
        .await?;
        Ok(id)
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
            .order_by_asc(chat_outbox::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// Notices waiting to be sent, oldest first.
    pub async fn chat_messages_to_send(&self) -> Result<Vec<chat_outbox::Model>, StoreError> {
        Ok(chat_outbox::Entity::find()
            .filter(chat_outbox::Column::State.eq("new"))
            .order_by_asc(chat_outbox::Column::Id)
            .limit(100)
            .all(&self.db)
            .await?)
    }

    /// Move a notice between states (`new` → `sending` claims it).
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
        let _turn = self.write_turn().await;
        let res = self
            .db
            .execute_raw(Statement::from_sql_and_values(
                self.backend(),
                sql,
                [
                    to.into(),
                    sent_ref.map(ToString::to_string).into(),
                    error.map(str::to_owned).into(),
                    now_ms().into(),
                    id.into(),
                    from.into(),
                ],
            ))
            .await?;
        Ok(res.rows_affected() == 1)
    }

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
