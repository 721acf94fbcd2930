//! Rows of the key-value datastore. Values arrive here already encoded: JSON
//! text, or a secret's ciphertext (`crate::datastore` seals and opens them).

use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement,
};

use super::{Store, StoreError, kv_pair};
use crate::execution::now_ms;

/// One row to write.
#[derive(Debug, Clone)]
pub struct KvWrite {
    pub scope: String,
    pub name: String,
    /// JSON text, or ciphertext when `key_id` is set.
    pub value: String,
    pub secret: bool,
    pub key_id: Option<String>,
    pub expires_at: Option<i64>,
}

/// What identifies the datastore's contents at a moment: a change to any row
/// (written, deleted) changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KvVersion {
    pub rows: i64,
    pub newest: i64,
    pub sum: i64,
}

fn live(now: i64) -> Condition {
    Condition::any()
        .add(kv_pair::Column::ExpiresAt.is_null())
        .add(kv_pair::Column::ExpiresAt.gt(now))
}

impl Store {
    /// Insert or replace a pair.
    pub async fn kv_put(&self, row: &KvWrite) -> Result<(), StoreError> {
        let now = now_ms();
        let _turn = self.write_turn().await;
        kv_pair::Entity::insert(kv_pair::ActiveModel {
            scope: Set(row.scope.clone()),
            name: Set(row.name.clone()),
            value: Set(row.value.clone()),
            secret: Set(row.secret),
            key_id: Set(row.key_id.clone()),
            expires_at: Set(row.expires_at),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .on_conflict(
            OnConflict::columns([kv_pair::Column::Scope, kv_pair::Column::Name])
                .update_columns([
                    kv_pair::Column::Value,
                    kv_pair::Column::Secret,
                    kv_pair::Column::KeyId,
                    kv_pair::Column::ExpiresAt,
                    kv_pair::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(&self.db)
        .await?;
        Ok(())
    }

    /// A live (not expired) pair.
    pub async fn kv_get(
        &self,
        scope: &str,
        name: &str,
    ) -> Result<Option<kv_pair::Model>, StoreError> {
        Ok(kv_pair::Entity::find()
            .filter(kv_pair::Column::Scope.eq(scope))
            .filter(kv_pair::Column::Name.eq(name))
            .filter(live(now_ms()))
            .one(&self.db)
            .await?)
    }

    /// Live pairs, by scope then name; `scope` and `prefix` narrow the list.
    pub async fn kv_list(
        &self,
        scope: Option<&str>,
        prefix: Option<&str>,
        limit: u64,
    ) -> Result<Vec<kv_pair::Model>, StoreError> {
        let mut query = kv_pair::Entity::find().filter(live(now_ms()));
        if let Some(scope) = scope {
            query = query.filter(kv_pair::Column::Scope.eq(scope));
        }
        if let Some(prefix) = prefix.filter(|p| !p.is_empty()) {
            query = query.filter(kv_pair::Column::Name.starts_with(prefix));
        }
        Ok(query
            .order_by_asc(kv_pair::Column::Scope)
            .order_by_asc(kv_pair::Column::Name)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Delete a pair; whether it existed (expired pairs count as gone).
    pub async fn kv_delete(&self, scope: &str, name: &str) -> Result<bool, StoreError> {
        let existed = self.kv_get(scope, name).await?.is_some();
        let _turn = self.write_turn().await;
        kv_pair::Entity::delete_many()
            .filter(kv_pair::Column::Scope.eq(scope))
            .filter(kv_pair::Column::Name.eq(name))
            .exec(&self.db)
            .await?;
        Ok(existed)
    }

    /// Secret rows not sealed with `key_id`, a page at a time (rotation).
    pub async fn kv_secrets_not_under(
        &self,
        key_id: &str,
        limit: u64,
    ) -> Result<Vec<kv_pair::Model>, StoreError> {
        Ok(kv_pair::Entity::find()
            .filter(kv_pair::Column::Secret.eq(true))
            .filter(
                Condition::any()
                    .add(kv_pair::Column::KeyId.is_null())
                    .add(kv_pair::Column::KeyId.ne(key_id)),
            )
            .order_by_asc(kv_pair::Column::Scope)
            .order_by_asc(kv_pair::Column::Name)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Replace a secret's ciphertext if it is still the one that was read
    /// (a concurrent write wins); whether the row was changed.
    pub async fn kv_reseal(
        &self,
        row: &kv_pair::Model,
        value: &str,
        key_id: &str,
    ) -> Result<bool, StoreError> {
        let _turn = self.write_turn().await;
        let done = kv_pair::Entity::update_many()
            .col_expr(kv_pair::Column::Value, Expr::value(value))
            .col_expr(kv_pair::Column::KeyId, Expr::value(key_id))
            .filter(kv_pair::Column::Scope.eq(row.scope.as_str()))
            .filter(kv_pair::Column::Name.eq(row.name.as_str()))
            .filter(kv_pair::Column::Value.eq(row.value.as_str()))
            .exec(&self.db)
            .await?;
        Ok(done.rows_affected == 1)
    }

    /// Every live pair (the in-memory snapshot templates read).
    pub async fn kv_all(&self) -> Result<Vec<kv_pair::Model>, StoreError> {
        Ok(kv_pair::Entity::find()
            .filter(live(now_ms()))
            .all(&self.db)
            .await?)
    }

    /// The datastore's current [`KvVersion`].
    pub async fn kv_version(&self) -> Result<KvVersion, StoreError> {
        let sql = "SELECT COUNT(*) AS n, CAST(COALESCE(MAX(updated_at), 0) AS BIGINT) AS newest, \
                   CAST(COALESCE(SUM(updated_at % 1000000007), 0) AS BIGINT) AS total FROM kv_pairs";
        let row = self
            .db
            .query_one_raw(Statement::from_string(self.backend(), sql.to_owned()))
            .await?;
        let Some(row) = row else {
            return Ok(KvVersion::default());
        };
        Ok(KvVersion {
            rows: row.try_get("", "n")?,
            newest: row.try_get("", "newest")?,
            sum: row.try_get("", "total")?,
        })
    }
}
