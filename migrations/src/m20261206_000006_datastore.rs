//! The key-value datastore (`st2kv`): one row per `(scope, name)`. `scope`
//! is `system` or `user:<name>`. `value` is JSON text, or for a secret the
//! AES-GCM ciphertext (`key_id` names the key that sealed it, so a rotation
//! stopped half-way leaves every row readable). `expires_at` is optional.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum KvPairs {
    Table,
    Scope,
    Name,
    Value,
    Secret,
    KeyId,
    ExpiresAt,
    CreatedAt,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use KvPairs as K;
        manager
            .create_table(
                Table::create()
                    .table(K::Table)
                    .col(ColumnDef::new(K::Scope).string().not_null())
                    .col(ColumnDef::new(K::Name).string().not_null())
                    .col(ColumnDef::new(K::Value).text().not_null())
                    .col(
                        ColumnDef::new(K::Secret)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .col(ColumnDef::new(K::KeyId).string().null())
                    .col(ColumnDef::new(K::ExpiresAt).big_integer().null())
                    .col(ColumnDef::new(K::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(K::UpdatedAt).big_integer().not_null())
                    .primary_key(Index::create().col(K::Scope).col(K::Name))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(KvPairs::Table).to_owned())
            .await
    }
}
