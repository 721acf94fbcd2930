//! The event log behind `/api/v1/stream`: one row per event, its `id` the
//! durable event id a client resumes from (`Last-Event-ID`).
//!
//! Changes of state are recorded by database triggers in the same
//! transaction as the change itself, so every writer (the intake, workers,
//! workflows, recovery, the chat outbox) produces them without a code path of
//! its own and none can be missed. Output lines are appended by the worker
//! while a run produces them (`execution.output`).
//!
//! Also: indexes for listing the audit log by time and subject, and
//! `rule_states`, rules enabled or disabled at run time (`squall rule
//! enable|disable`), which override the pack files' `enabled`.
//!
//! Kinds: `execution.created`, `execution.changed`, `execution.output`,
//! `trigger.instance`, `inquiry.opened`, `inquiry.decided`, `chat.delivery`.
//! `data` is a JSON object (text); `subject` is the id of what it is about.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

const SQLITE: &[&str] = &[
    "CREATE INDEX idx_audit_log_at ON audit_log (at)",
    "CREATE INDEX idx_audit_log_subject ON audit_log (subject)",
    "CREATE TABLE rule_states (rule VARCHAR(255) NOT NULL PRIMARY KEY, enabled BOOLEAN NOT NULL, \
     updated_at BIGINT NOT NULL, updated_by VARCHAR(255) NOT NULL)",
    "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, at BIGINT NOT NULL, \
     kind TEXT NOT NULL, subject TEXT NOT NULL, data TEXT NOT NULL)",
    "CREATE INDEX events_subject ON events (subject, id)",
    "CREATE TRIGGER events_execution_created AFTER INSERT ON executions BEGIN \
     INSERT INTO events (at, kind, subject, data) VALUES (NEW.created_at, 'execution.created', NEW.id, \
     json_object('action', NEW.action, 'status', NEW.status, 'parent_id', NEW.parent_id)); END",
    "CREATE TRIGGER events_execution_changed AFTER UPDATE OF status ON executions \
     WHEN OLD.status <> NEW.status BEGIN \
     INSERT INTO events (at, kind, subject, data) VALUES (NEW.updated_at, 'execution.changed', NEW.id, \
     json_object('action', NEW.action, 'status', NEW.status, 'previous', OLD.status, \
     'parent_id', NEW.parent_id, 'exit_code', NEW.exit_code)); END",
    "CREATE TRIGGER events_trigger_instance AFTER INSERT ON trigger_instances BEGIN \
     INSERT INTO events (at, kind, subject, data) VALUES (NEW.occurred_at, 'trigger.instance', NEW.id, \
     json_object('trigger', NEW.trigger, 'source', NEW.source)); END",
    "CREATE TRIGGER events_inquiry_opened AFTER INSERT ON inquiries BEGIN \
     INSERT INTO events (at, kind, subject, data) VALUES (NEW.created_at, 'inquiry.opened', NEW.id, \
     json_object('execution_id', NEW.execution_id, 'workflow_id', NEW.workflow_id, 'status', NEW.status)); END",
    "CREATE TRIGGER events_inquiry_decided AFTER UPDATE OF status ON inquiries \
     WHEN OLD.status <> NEW.status BEGIN \
     INSERT INTO events (at, kind, subject, data) VALUES (NEW.updated_at, 'inquiry.decided', NEW.id, \
     json_object('execution_id', NEW.execution_id, 'status', NEW.status, 'decided_by', NEW.decided_by)); END",
    "CREATE TRIGGER events_chat_delivery AFTER UPDATE OF state ON chat_outbox \
     WHEN OLD.state <> NEW.state AND NEW.state IN ('sent', 'failed', 'skipped') BEGIN \
     INSERT INTO events (at, kind, subject, data) VALUES (NEW.updated_at, 'chat.delivery', NEW.id, \
     json_object('state', NEW.state, 'kind', NEW.kind, 'platform', NEW.platform, 'channel', NEW.channel, \
     'execution_id', NEW.execution_id, 'attempts', NEW.attempts, 'latency_ms', NEW.updated_at - NEW.created_at)); END",
];

const POSTGRES: &[&str] = &[
    "CREATE INDEX idx_audit_log_at ON audit_log (at)",
    "CREATE INDEX idx_audit_log_subject ON audit_log (subject)",
    "CREATE TABLE rule_states (rule VARCHAR(255) NOT NULL PRIMARY KEY, enabled BOOLEAN NOT NULL, \
     updated_at BIGINT NOT NULL, updated_by VARCHAR(255) NOT NULL)",
    "CREATE TABLE events (id BIGSERIAL PRIMARY KEY, at BIGINT NOT NULL, \
     kind TEXT NOT NULL, subject TEXT NOT NULL, data TEXT NOT NULL)",
    "CREATE INDEX events_subject ON events (subject, id)",
    "CREATE FUNCTION squall_event_execution() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
     IF TG_OP = 'INSERT' THEN \
       INSERT INTO events (at, kind, subject, data) VALUES (NEW.created_at, 'execution.created', NEW.id, \
       json_build_object('action', NEW.action, 'status', NEW.status, 'parent_id', NEW.parent_id)::text); \
     ELSIF NEW.status IS DISTINCT FROM OLD.status THEN \
       INSERT INTO events (at, kind, subject, data) VALUES (NEW.updated_at, 'execution.changed', NEW.id, \
       json_build_object('action', NEW.action, 'status', NEW.status, 'previous', OLD.status, \
       'parent_id', NEW.parent_id, 'exit_code', NEW.exit_code)::text); \
     END IF; RETURN NULL; END $$",
    "CREATE TRIGGER events_execution AFTER INSERT OR UPDATE OF status ON executions \
     FOR EACH ROW EXECUTE FUNCTION squall_event_execution()",
    "CREATE FUNCTION squall_event_trigger_instance() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
     INSERT INTO events (at, kind, subject, data) VALUES (NEW.occurred_at, 'trigger.instance', NEW.id, \
     json_build_object('trigger', NEW.trigger, 'source', NEW.source)::text); RETURN NULL; END $$",
    "CREATE TRIGGER events_trigger_instance AFTER INSERT ON trigger_instances \
     FOR EACH ROW EXECUTE FUNCTION squall_event_trigger_instance()",
    "CREATE FUNCTION squall_event_inquiry() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
     IF TG_OP = 'INSERT' THEN \
       INSERT INTO events (at, kind, subject, data) VALUES (NEW.created_at, 'inquiry.opened', NEW.id, \
       json_build_object('execution_id', NEW.execution_id, 'workflow_id', NEW.workflow_id, 'status', NEW.status)::text); \
     ELSIF NEW.status IS DISTINCT FROM OLD.status THEN \
       INSERT INTO events (at, kind, subject, data) VALUES (NEW.updated_at, 'inquiry.decided', NEW.id, \
       json_build_object('execution_id', NEW.execution_id, 'status', NEW.status, 'decided_by', NEW.decided_by)::text); \
     END IF; RETURN NULL; END $$",
    "CREATE TRIGGER events_inquiry AFTER INSERT OR UPDATE OF status ON inquiries \
     FOR EACH ROW EXECUTE FUNCTION squall_event_inquiry()",
    "CREATE FUNCTION squall_event_chat_delivery() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
     IF NEW.state IS DISTINCT FROM OLD.state AND NEW.state IN ('sent', 'failed', 'skipped') THEN \
       INSERT INTO events (at, kind, subject, data) VALUES (NEW.updated_at, 'chat.delivery', NEW.id, \
       json_build_object('state', NEW.state, 'kind', NEW.kind, 'platform', NEW.platform, 'channel', NEW.channel, \
       'execution_id', NEW.execution_id, 'attempts', NEW.attempts, 'latency_ms', NEW.updated_at - NEW.created_at)::text); \
     END IF; RETURN NULL; END $$",
    "CREATE TRIGGER events_chat_delivery AFTER UPDATE OF state ON chat_outbox \
     FOR EACH ROW EXECUTE FUNCTION squall_event_chat_delivery()",
];

const SQLITE_DOWN: &[&str] = &[
    "DROP TABLE IF EXISTS rule_states",
    "DROP INDEX IF EXISTS idx_audit_log_at",
    "DROP INDEX IF EXISTS idx_audit_log_subject",
    "DROP TRIGGER IF EXISTS events_execution_created",
    "DROP TRIGGER IF EXISTS events_execution_changed",
    "DROP TRIGGER IF EXISTS events_trigger_instance",
    "DROP TRIGGER IF EXISTS events_inquiry_opened",
    "DROP TRIGGER IF EXISTS events_inquiry_decided",
    "DROP TRIGGER IF EXISTS events_chat_delivery",
    "DROP TABLE IF EXISTS events",
];

const POSTGRES_DOWN: &[&str] = &[
    "DROP TABLE IF EXISTS rule_states",
    "DROP INDEX IF EXISTS idx_audit_log_at",
    "DROP INDEX IF EXISTS idx_audit_log_subject",
    "DROP TRIGGER IF EXISTS events_execution ON executions",
    "DROP TRIGGER IF EXISTS events_trigger_instance ON trigger_instances",
    "DROP TRIGGER IF EXISTS events_inquiry ON inquiries",
    "DROP TRIGGER IF EXISTS events_chat_delivery ON chat_outbox",
    "DROP FUNCTION IF EXISTS squall_event_execution()",
    "DROP FUNCTION IF EXISTS squall_event_trigger_instance()",
    "DROP FUNCTION IF EXISTS squall_event_inquiry()",
    "DROP FUNCTION IF EXISTS squall_event_chat_delivery()",
    "DROP TABLE IF EXISTS events",
];

async fn run_all(manager: &SchemaManager<'_>, statements: &[&str]) -> Result<(), DbErr> {
    let db = manager.get_connection();
    for sql in statements {
        db.execute_unprepared(sql).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        match manager.get_database_backend() {
            DbBackend::Postgres => run_all(manager, POSTGRES).await,
            _ => run_all(manager, SQLITE).await,
        }
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        match manager.get_database_backend() {
            DbBackend::Postgres => run_all(manager, POSTGRES_DOWN).await,
            _ => run_all(manager, SQLITE_DOWN).await,
        }
    }
}
