//! sea-orm entities for the tables created by `squall-migrations`.

pub mod execution {
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize)]
    #[sea_orm(table_name = "executions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub action: String,
        pub runner: String,
        pub status: String,
        pub parameters: String,
        pub result: Option<String>,
        pub stdout: Option<String>,
        pub stderr: Option<String>,
        pub exit_code: Option<i32>,
        pub error: Option<String>,
        pub context: String,
        pub parent_id: Option<String>,
        pub attempt: i32,
        pub idempotent: bool,
        pub lease_owner: Option<String>,
        pub lease_expires_at: Option<i64>,
        pub created_at: i64,
        pub started_at: Option<i64>,
        pub finished_at: Option<i64>,
        pub updated_at: i64,
        /// Inherited secret values (`crate::secrets`); never shown.
        #[serde(skip)]
        pub secrets: Option<String>,
        /// For a run that did not succeed: whether a retry can help
        /// (`crate::runner::Retry`), when it says.
        pub retry: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod trigger_instance {
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize)]
    #[sea_orm(table_name = "trigger_instances")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub trigger: String,
        pub payload: String,
        pub source: String,
        pub occurred_at: i64,
        /// Secret values of the execution that caused it (`crate::secrets`); never shown.
        #[serde(skip)]
        pub secrets: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod rule_enforcement {
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize)]
    #[sea_orm(table_name = "rule_enforcements")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub rule: String,
        pub trigger_instance_id: String,
        pub execution_id: Option<String>,
        pub status: String,
        pub failure_reason: Option<String>,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod api_key {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub name: String,
        pub key_hash: String,
        pub enabled: bool,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod audit {
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize)]
    #[sea_orm(table_name = "audit_log")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub at: i64,
        pub actor: String,
        pub kind: String,
        pub subject: String,
        pub detail: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod workflow_task {
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize)]
    #[sea_orm(table_name = "workflow_tasks")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub workflow_id: String,
        pub name: String,
        pub status: String,
        pub attempt: i32,
        pub execution_id: Option<String>,
        pub items_total: Option<i32>,
        pub inbound: i32,
        pub not_before: Option<i64>,
        pub result: Option<String>,
        pub publish: Option<String>,
        pub error: Option<String>,
        pub seq: Option<i64>,
        pub created_at: i64,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod inquiry {
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize)]
    #[sea_orm(table_name = "inquiries")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub execution_id: String,
        pub workflow_id: Option<String>,
        pub status: String,
        pub params: String,
        pub requester: Option<String>,
        pub target: Option<String>,
        pub prompt_ref: Option<String>,
        pub prompt_key: Option<String>,
        pub prompt_state: String,
        pub response: Option<String>,
        pub decided_by: Option<String>,
        pub decided_at: Option<i64>,
        pub expires_at: Option<i64>,
        pub created_at: i64,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod inquiry_vote {
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize)]
    #[sea_orm(table_name = "inquiry_votes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub inquiry_id: String,
        pub voter: String,
        pub approve: bool,
        pub response: String,
        pub at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod chat_outbox {
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize)]
    #[sea_orm(table_name = "chat_outbox")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub execution_id: Option<String>,
        pub target: String,
        pub message: String,
        pub thread_key: Option<String>,
        pub state: String,
        pub sent_ref: Option<String>,
        pub error: Option<String>,
        pub created_at: i64,
        pub updated_at: i64,
        pub kind: String,
        pub platform: Option<String>,
        pub channel: Option<String>,
        pub thread: Option<String>,
        pub inquiry_id: Option<String>,
        pub edit_of: Option<String>,
        pub ready_at: i64,
        pub attempts: i32,
        pub next_attempt_at: Option<i64>,
        pub claimed_by: Option<String>,
        pub lease_until: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod kv_pair {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "kv_pairs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub scope: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub value: String,
        pub secret: bool,
        pub key_id: Option<String>,
        pub expires_at: Option<i64>,
        pub created_at: i64,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
