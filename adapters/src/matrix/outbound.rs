//! Login and everything squall sends to Matrix: messages, threads, edits
//! (m.replace), reactions, typing. Each message is sent with the outbox row
//! id as its transaction id, so the homeserver drops a resend of one it has.

use std::path::Path;

use matrix_sdk::Client;
use matrix_sdk::authentication::matrix::MatrixSession;
use matrix_sdk::ruma::events::reaction::ReactionEventContent;
use matrix_sdk::ruma::events::relation::{Annotation, Thread};
use matrix_sdk::ruma::events::room::message::{Relation, ReplacementMetadata};
use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId, OwnedTransactionId};
use matrix_sdk::store::RoomLoadSettings;

use squall_engine::chat::{AdapterError, ChannelRef, OutgoingMessage, SentMessage};

use super::{MatrixConfig, permanent, render, request_error, transient};

/// Build the client and log in, restoring the saved session (same device,
/// same crypto identity) when there is one.
pub async fn connect(config: &MatrixConfig) -> Result<Client, AdapterError> {
    std::fs::create_dir_all(&config.store_dir).map_err(permanent)?;
    let passphrase = config.store_passphrase.as_ref().map(|p| p.0.as_str());
    // Only the crypto identity (device keys, sessions) must outlive a
    // restart. Room state is rebuilt by the first sync, and squall ignores
    // what happened before it started: keeping room state in memory spares
    // every sync a database transaction before its events reach squall.
    let crypto = matrix_sdk::SqliteCryptoStore::open(config.store_dir.join("store"), passphrase)
        .await
        .map_err(transient)?;
    let stores = matrix_sdk::config::StoreConfig::new(
        matrix_sdk::cross_process_lock::CrossProcessLockConfig::SingleProcess,
    )
    .crypto_store(crypto);
    let client = Client::builder()
        .homeserver_url(&config.homeserver)
        .store_config(stores)
        .build()
        .await
        .map_err(transient)?;
    let session_file = config.store_dir.join("session.json");
    if let Some(session) = read_session(&session_file)? {
        client
            .matrix_auth()
            .restore_session(session, RoomLoadSettings::default())
            .await
            .map_err(transient)?;
        return Ok(client);
    }
    if let Some(token) = &config.access_token {
        let whoami_user = matrix_sdk::ruma::UserId::parse(&config.user).map_err(permanent)?;
        let device = config.device_id.clone().unwrap_or_default();
        let session = MatrixSession {
            meta: matrix_sdk::SessionMeta {
                user_id: whoami_user,
                device_id: device.into(),
            },
            tokens: matrix_sdk::SessionTokens {
                access_token: token.0.clone(),
                refresh_token: None,
            },
        };
        client
            .matrix_auth()
            .restore_session(session, RoomLoadSettings::default())
            .await
            .map_err(transient)?;
    } else if let Some(password) = &config.password {
        let mut login = client
            .matrix_auth()
            .login_username(&config.user, &password.0)
            .initial_device_display_name("squall");
        if let Some(device) = &config.device_id {
            login = login.device_id(device);
        }
        login.send().await.map_err(|e| {
            if e.to_string().contains("M_FORBIDDEN") {
                permanent(format!("login as {} was refused: {e}", config.user))
            } else {
                transient(e)
            }
        })?;
    }
    if let Some(session) = client.matrix_auth().session() {
        write_session(&session_file, &session)?;
    }
    Ok(client)
}

fn read_session(path: &Path) -> Result<Option<MatrixSession>, AdapterError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| permanent(format!("{} is corrupt: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(permanent(format!("{}: {e}", path.display()))),
    }
}

/// The session holds the access token: owner-only permissions.
fn write_session(path: &Path, session: &MatrixSession) -> Result<(), AdapterError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let text = serde_json::to_string(session).map_err(permanent)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(permanent)?;
    file.write_all(text.as_bytes()).map_err(permanent)
}

/// One attempt, answered within 20 s: squall's outbox retries (with the
/// same transaction id) and honours rate limits itself, and must not sit in
/// matrix-sdk's own retries past its claim's lease.
fn send_config() -> matrix_sdk::config::RequestConfig {
    matrix_sdk::config::RequestConfig::new()
        .disable_retry()
        .timeout(std::time::Duration::from_secs(20))
}

fn room(client: &Client, channel: &str) -> Result<matrix_sdk::Room, AdapterError> {
    let id = OwnedRoomId::try_from(channel).map_err(permanent)?;
    client
        .get_room(&id)
        .ok_or_else(|| permanent(format!("squall is not in room {channel}")))
}

fn event_id(text: &str) -> Result<OwnedEventId, AdapterError> {
    OwnedEventId::try_from(text).map_err(permanent)
}

pub async fn send(
    client: &Client,
    to: &ChannelRef,
    message: &OutgoingMessage,
    key: &str,
) -> Result<SentMessage, AdapterError> {
    let room = room(client, &to.channel)?;
    let mut content = render::content(message);
    if let Some(thread) = &to.thread {
        let root = event_id(thread)?;
        content.relates_to = Some(Relation::Thread(Thread::plain(root.clone(), root)));
    }
    let response = room
        .send(content)
        .with_transaction_id(OwnedTransactionId::from(key))
        .with_request_config(send_config())
        .await
        .map_err(request_error)?;
    Ok(SentMessage {
        to: to.clone(),
        message_id: response.response.event_id.to_string(),
    })
}

pub async fn edit(
    client: &Client,
    sent: &SentMessage,
    message: &OutgoingMessage,
    key: &str,
) -> Result<(), AdapterError> {
    let room = room(client, &sent.to.channel)?;
    let original = event_id(&sent.message_id)?;
    let content =
        render::content(message).make_replacement(ReplacementMetadata::new(original, None));
    room.send(content)
        .with_transaction_id(OwnedTransactionId::from(key))
        .with_request_config(send_config())
        .await
        .map_err(request_error)?;
    Ok(())
}

pub async fn react(client: &Client, sent: &SentMessage, emoji: &str) -> Result<(), AdapterError> {
    let room = room(client, &sent.to.channel)?;
    let target = event_id(&sent.message_id)?;
    room.send(ReactionEventContent::new(Annotation::new(
        target,
        emoji.to_owned(),
    )))
    .await
    .map_err(request_error)?;
    Ok(())
}

pub async fn typing(client: &Client, to: &ChannelRef, on: bool) -> Result<(), AdapterError> {
    room(client, &to.channel)?
        .typing_notice(on)
        .await
        .map_err(request_error)
}
