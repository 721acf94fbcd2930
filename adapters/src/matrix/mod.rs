//! Matrix adapter on matrix-sdk: password or token login with a persistent
//! device and crypto store, a sync loop that survives homeserver restarts
//! (backoff, resumes from its sync token, never replays history from before
//! it started), auto-join on invite, threads, edits, reactions and
//! end-to-end encrypted rooms.

mod config;
mod inbound;
mod outbound;

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

pub use config::MatrixConfig;

const PLATFORM: &str = "matrix";

pub struct MatrixAdapter {
    config: MatrixConfig,
    client: OnceCell<Client>,
    /// Reactions seen, by reaction event id, so a redaction can be reported
    /// as the removal of that reaction.
    reactions: Arc<Mutex<inbound::ReactionLog>>,
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

fn permanent(err: impl std::fmt::Display) -> AdapterError {
    AdapterError::Permanent {
        platform: PLATFORM.into(),
        reason: err.to_string(),
    }
}

/// Exponential backoff between reconnection attempts.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(Duration::from_millis(250))
    }
    fn reset(&mut self) {
        self.0 = Duration::from_millis(250);
    }
    async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let delay = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(15));
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = shutdown.cancelled() => false,
        }
    }
}

#[async_trait::async_trait]
impl ChatAdapter for MatrixAdapter {
    fn platform(&self) -> &'static str {
        PLATFORM
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            threads: true,
            edits: true,
            reactions: true,
            buttons: false,
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
        let client = self.client.get_or_init(|| async { client }).await.clone();
        // One sync before the handlers exist: what happened before squall
        // started is state, not commands.
        let token = loop {
            match client
                .sync_once(SyncSettings::default().timeout(Duration::from_secs(0)))
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
        // Invites that arrived while squall was down are state of that first
        // sync, not events the handlers will see: accept them now.
        for room in client.invited_rooms() {
            let allowed = self.config.rooms.clone();
            tokio::spawn(async move { inbound::accept_invite(room, &allowed).await });
        }
        inbound::register_handlers(
            &client,
            &self.config,
            events,
            started,
            self.reactions.clone(),
        );
        // Our own loop over sync_once: matrix-sdk's sync loop sleeps a second
        // after any sync that returned quickly, which in a busy room delays
        // every command by up to that second.
        let mut token = token;
        loop {
            let settings = SyncSettings::default()
                .token(token.clone())
                .timeout(Duration::from_secs(30));
            let synced = tokio::select! {
                synced = client.sync_once(settings) => synced,
                () = shutdown.cancelled() => return Ok(()),
            };
            match synced {
                Ok(response) => {
                    token = response.next_batch;
                    backoff.reset();
                }
                Err(err) => {
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
    ) -> Result<SentMessage, AdapterError> {
        outbound::send(self.client()?, to, message).await
    }

    async fn edit(
        &self,
        sent: &SentMessage,
        message: &OutgoingMessage,
    ) -> Result<(), AdapterError> {
        outbound::edit(self.client()?, sent, message).await
    }

    async fn react(&self, sent: &SentMessage, emoji: &str) -> Result<(), AdapterError> {
        outbound::react(self.client()?, sent, emoji).await
    }

    async fn typing(&self, to: &ChannelRef, on: bool) -> Result<(), AdapterError> {
        outbound::typing(self.client()?, to, on).await
    }
}
