//! Matrix adapter on matrix-sdk: password or token login with a persistent
//! device and crypto store (room state lives in memory and is rebuilt by the
//! first sync), a sync loop that survives homeserver restarts (backoff,
//! resumes from its sync token, never replays history from before it
//! started), auto-join on invite, threads, edits, reactions and end-to-end
//! encrypted rooms.

mod config;
mod inbound;
mod outbound;
mod render;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use matrix_sdk::Client;
use matrix_sdk::config::SyncSettings;
use matrix_sdk::ruma::MilliSecondsSinceUnixEpoch;
use tokio::sync::{OnceCell, mpsc};
use tokio_util::sync::CancellationToken;

use squall_engine::chat::{
    AdapterError, Capabilities, ChannelRef, ChatAdapter, ChatEvent, OutgoingMessage, SentMessage,
};

use crate::common::Backoff;

pub use config::MatrixConfig;

const PLATFORM: &str = "matrix";

pub struct MatrixAdapter {
    config: MatrixConfig,
    client: OnceCell<Client>,
    /// Reactions seen, by reaction event id, so a redaction can be reported
    /// as the removal of that reaction.
    reactions: Arc<Mutex<inbound::ReactionLog>>,
    /// The last sync succeeded.
    connected: squall_engine::chat::ConnectionState,
}

impl MatrixAdapter {
    pub fn new(config: MatrixConfig) -> Result<Self, AdapterError> {
        config
            .validate()
            .map_err(|reason| AdapterError::Permanent {
                platform: PLATFORM.into(),
                reason,
            })?;
        Ok(Self {
            config,
            client: OnceCell::new(),
            reactions: Arc::new(Mutex::new(inbound::ReactionLog::default())),
            connected: squall_engine::chat::ConnectionState::default(),
        })
    }

    fn client(&self) -> Result<&Client, AdapterError> {
        self.client.get().ok_or_else(|| AdapterError::Transient {
            platform: PLATFORM.into(),
            reason: "not connected yet".into(),
        })
    }

    /// The connected client (tests use it to check the bot's state).
    pub fn connected_client(&self) -> Option<&Client> {
        self.client.get()
    }
}

fn transient(err: impl std::fmt::Display) -> AdapterError {
    AdapterError::Transient {
        platform: PLATFORM.into(),
        reason: err.to_string(),
    }
}

/// A failed request: the homeserver's 429 (with its retry-after) is a rate
/// limit, other 4xx answers (M_TOO_LARGE, M_FORBIDDEN, ...) are refusals a
/// retry cannot fix, the rest (no answer, 5xx) transient.
fn request_error(err: matrix_sdk::Error) -> AdapterError {
    use matrix_sdk::ruma::api::error::{ErrorKind, LimitExceededErrorData, RetryAfter};
    // Not in the room (left, kicked), or not allowed to post there: a retry
    // cannot fix that.
    if matches!(err, matrix_sdk::Error::WrongRoomState(_))
        || matches!(err.client_api_error_kind(), Some(ErrorKind::Forbidden))
    {
        return permanent(err);
    }
    let api = err.as_client_api_error();
    let status = api.map(|e| e.status_code.as_u16());
    let retry_after = match err.client_api_error_kind() {
        Some(ErrorKind::LimitExceeded(LimitExceededErrorData {
            retry_after: Some(RetryAfter::Delay(d)),
            ..
        })) => Some(*d),
        Some(ErrorKind::LimitExceeded(LimitExceededErrorData {
            retry_after: Some(RetryAfter::DateTime(at)),
            ..
        })) => at.duration_since(std::time::SystemTime::now()).ok(),
        _ => None,
    };
    crate::common::http_error(PLATFORM, status, retry_after, err)
}

fn permanent(err: impl std::fmt::Display) -> AdapterError {
    AdapterError::Permanent {
        platform: PLATFORM.into(),
        reason: err.to_string(),
    }
}

/// Events per room one sync may carry. Synapse's default (10) would drop
/// commands sent in a burst while squall was (re)connecting: a limited
/// timeline leaves a gap.
const TIMELINE_LIMIT: u32 = 200;

fn sync_settings() -> SyncSettings {
    use matrix_sdk::ruma::api::client::filter::{Filter, FilterDefinition, RoomEventFilter};
    let mut filter = FilterDefinition::default();
    filter.room.timeline.limit = Some(TIMELINE_LIMIT.into());
    // Presence, typing and read receipts are nothing squall acts on: left
    // out, every sync is smaller and handled sooner.
    filter.presence = Filter::ignore_all();
    filter.room.ephemeral = RoomEventFilter::ignore_all();
    SyncSettings::default().filter(filter.into())
}

/// A room whose timeline was cut in a sync may have lost commands: say so.
fn warn_if_limited(response: &matrix_sdk::sync::SyncResponse) {
    for (room, update) in &response.rooms.joined {
        if update.timeline.limited {
            // Expected for a room just joined (its history); otherwise a
            // burst larger than the limit, whose earlier commands are lost.
            tracing::info!(%room, "a sync cut the room's timeline to its last {TIMELINE_LIMIT} events");
        }
    }
}

#[async_trait::async_trait]
impl ChatAdapter for MatrixAdapter {
    fn platform(&self) -> &'static str {
        PLATFORM
    }

    fn connected(&self) -> bool {
        self.connected.is_up()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            threads: true,
            edits: true,
            reactions: true,
            buttons: false,
            typing: true,
            http_ingress: false,
        }
    }

    async fn run(
        &self,
        events: mpsc::Sender<ChatEvent>,
        shutdown: CancellationToken,
    ) -> Result<(), AdapterError> {
        let started = MilliSecondsSinceUnixEpoch::now();
        let mut backoff = Backoff::new();
        // Connect (the homeserver may not be up yet).
        let client = loop {
            match outbound::connect(&self.config).await {
                Ok(client) => break client,
                Err(err @ AdapterError::Permanent { .. }) => return Err(err),
                Err(err) => {
                    tracing::warn!(error = %err, "connecting to the Matrix homeserver failed; retrying");
                    if !backoff.wait(&shutdown).await {
                        return Ok(());
                    }
                }
            }
        };
        // Handlers before the first sync: a command sent while squall was
        // starting arrives in it. What happened before squall started is
        // state, not commands: the handlers drop events older than `started`.
        inbound::register_handlers(
            &client,
            &self.config,
            events,
            started,
            self.reactions.clone(),
        );
        let token = loop {
            match client
                .sync_once(sync_settings().timeout(Duration::from_secs(0)))
                .await
            {
                Ok(response) => break response.next_batch,
                Err(err) => {
                    tracing::warn!(error = %err, "initial Matrix sync failed; retrying");
                    if !backoff.wait(&shutdown).await {
                        return Ok(());
                    }
                }
            }
        };
        backoff.reset();
        // Sends wait for the first sync ("not connected yet" is transient):
        // room state lives in memory, so before it no room is known and a
        // send would be refused as "not in room".
        let client = self.client.get_or_init(|| async { client }).await.clone();
        self.connected.set(true);
        // Invites that arrived while squall was down are state of that first
        // sync, not events the handlers will see: accept them now.
        for room in client.invited_rooms() {
            let allowed = self.config.rooms.clone();
            tokio::spawn(async move { inbound::accept_invite(room, &allowed).await });
        }
        // Our own loop over sync_once: matrix-sdk's sync loop sleeps a second
        // after any sync that returned quickly, which in a busy room delays
        // every command by up to that second.
        let mut token = token;
        loop {
            let settings = sync_settings()
                .token(token.clone())
                .timeout(Duration::from_secs(30));
            let synced = tokio::select! {
                synced = client.sync_once(settings) => synced,
                () = shutdown.cancelled() => return Ok(()),
            };
            match synced {
                Ok(response) => {
                    warn_if_limited(&response);
                    token = response.next_batch;
                    backoff.reset();
                    self.connected.set(true);
                }
                Err(err) => {
                    self.connected.set(false);
                    tracing::warn!(error = %err, "Matrix sync failed; retrying from the last sync token");
                    if !backoff.wait(&shutdown).await {
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn send(
        &self,
        to: &ChannelRef,
        message: &OutgoingMessage,
        key: &str,
    ) -> Result<SentMessage, AdapterError> {
        outbound::send(self.client()?, to, message, key).await
    }

    async fn edit(
        &self,
        sent: &SentMessage,
        message: &OutgoingMessage,
        key: &str,
    ) -> Result<(), AdapterError> {
        outbound::edit(self.client()?, sent, message, key).await
    }

    async fn react(&self, sent: &SentMessage, emoji: &str) -> Result<(), AdapterError> {
        outbound::react(self.client()?, sent, emoji).await
    }

    async fn typing(&self, to: &ChannelRef, on: bool) -> Result<(), AdapterError> {
        outbound::typing(self.client()?, to, on).await
    }
}
