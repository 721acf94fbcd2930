//! The Web API calls squall makes, on slack-morphism's client: posting,
//! updating, ephemeral notices, reactions, `auth.test` and `users.info`.
//! Slack's answers map onto `AdapterError`: HTTP 429 (and `ratelimited`) is a
//! rate limit with Slack's `Retry-After`, a refusal of the message itself
//! (`channel_not_found`, `not_in_channel`, `msg_too_long`, ...) is permanent,
//! the rest (no answer, 5xx, `internal_error`) transient.

use std::sync::Arc;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::Value;
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;

use squall_engine::chat::{AdapterError, ChannelRef, OutgoingMessage, SentMessage};

use super::{PLATFORM, render};

pub(super) type Connector = SlackClientHyperConnector<HttpsConnector<HttpConnector>>;
pub(super) type Client = SlackClient<Connector>;

/// A client for `api_url` (https, or http for a local test server).
pub(super) fn client(api_url: &str) -> Result<Arc<Client>, AdapterError> {
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    // The system's roots where there are any, the bundled ones otherwise.
    let builder = match builder.with_native_roots() {
        Ok(b) => b,
        Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots(),
    };
    let https = builder
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    let connector =
        SlackClientHyperConnector::from(https).with_slack_api_url(api_url.trim_end_matches('/'));
    Ok(Arc::new(SlackClient::new(connector)))
}

/// API error codes that no retry can fix.
const REFUSED: &[&str] = &[
    "channel_not_found",
    "not_in_channel",
    "is_archived",
    "msg_too_long",
    "no_text",
    "invalid_blocks",
    "invalid_attachments",
    "too_many_attachments",
    "cant_update_message",
    "message_not_found",
    "edit_window_closed",
    "restricted_action",
    "restricted_action_read_only_channel",
    "restricted_action_thread_only_channel",
    "user_not_in_channel",
    "invalid_arguments",
    "invalid_name",
    "bad_timestamp",
    "too_many_reactions",
    "user_not_found",
];

/// `auth.test` answers for a token that will not work.
const BAD_TOKEN: &[&str] = &[
    "invalid_auth",
    "not_authed",
    "account_inactive",
    "token_revoked",
    "token_expired",
    "not_allowed_token_type",
];

pub(super) fn error(err: SlackClientError) -> AdapterError {
    match &err {
        SlackClientError::RateLimitError(e) => AdapterError::RateLimited {
            platform: PLATFORM.into(),
            retry_after: e.retry_after,
        },
        SlackClientError::ApiError(e) if e.code == "ratelimited" => AdapterError::RateLimited {
            platform: PLATFORM.into(),
            retry_after: None,
        },
        SlackClientError::ApiError(e) if REFUSED.contains(&e.code.as_str()) => {
            AdapterError::Permanent {
                platform: PLATFORM.into(),
                reason: e.code.clone(),
            }
        }
        SlackClientError::ApiError(e) => AdapterError::Transient {
            platform: PLATFORM.into(),
            reason: e.code.clone(),
        },
        SlackClientError::HttpError(e) => crate::common::http_error(
            PLATFORM,
            Some(e.status_code.as_u16()),
            None,
            format!("HTTP {}", e.status_code),
        ),
        // Slack took the request, but its answer does not parse: sending
        // again would post twice.
        SlackClientError::ProtocolError(e) => AdapterError::Permanent {
            platform: PLATFORM.into(),
            reason: format!("Slack's answer does not parse: {e}"),
        },
        other => AdapterError::Transient {
            platform: PLATFORM.into(),
            reason: other.to_string(),
        },
    }
}

fn content(message: &OutgoingMessage) -> Result<SlackMessageContent, AdapterError> {
    serde_json::from_value(render::content(message)).map_err(|e| AdapterError::Permanent {
        platform: PLATFORM.into(),
        reason: format!("the message does not render as Block Kit: {e}"),
    })
}

/// How long one Web API call may take: the delivery loop sends one
/// message at a time, so a call Slack never answers must not hold it.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

async fn timed<T>(
    call: impl std::future::Future<Output = Result<T, SlackClientError>>,
) -> Result<T, SlackClientError> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(SlackClientError::HttpProtocolError(
                slack_morphism::errors::SlackClientHttpProtocolError {
                    cause: Some("no answer from Slack within 20 s".into()),
                },
            ))
        })
}

pub(super) struct Api {
    pub(super) client: Arc<Client>,
    pub(super) token: SlackApiToken,
}

impl Api {
    pub(super) fn new(client: Arc<Client>, bot_token: &str) -> Self {
        Self {
            client,
            token: SlackApiToken::new(SlackApiTokenValue(bot_token.to_owned())),
        }
    }

    /// The bot's own user id and bot id.
    pub(super) async fn whoami(&self) -> Result<(String, Option<String>), AdapterError> {
        let me = match timed(self.client.open_session(&self.token).auth_test()).await {
            Ok(me) => me,
            // A token Slack does not take: say so instead of retrying.
            Err(SlackClientError::ApiError(e)) if BAD_TOKEN.contains(&e.code.as_str()) => {
                return Err(AdapterError::Permanent {
                    platform: PLATFORM.into(),
                    reason: format!(
                        "Slack refused slack.bot_token ({}): use the app's Bot User OAuth Token (xoxb-…)",
                        e.code
                    ),
                });
            }
            Err(e) => return Err(error(e)),
        };
        Ok((me.user_id.0, me.bot_id.map(|b| b.0)))
    }

    /// `chat.postMessage`, or `chat.postEphemeral` for a message shown only
    /// to one person (`message.only_for`).
    pub(super) async fn post(
        &self,
        to: &ChannelRef,
        message: &OutgoingMessage,
    ) -> Result<SentMessage, AdapterError> {
        let session = self.client.open_session(&self.token);
        let content = content(message)?;
        let thread = to.thread.clone().map(SlackTs);
        if let Some(user) = &message.only_for {
            let req = SlackApiChatPostEphemeralRequest::new(
                SlackChannelId(to.channel.clone()),
                SlackUserId(user.clone()),
                content,
            )
            .opt_thread_ts(thread);
            timed(session.chat_post_ephemeral(&req))
                .await
                .map_err(error)?;
            // Nothing to edit or react to later: no message id.
            return Ok(SentMessage {
                to: to.clone(),
                message_id: String::new(),
            });
        }
        let req = SlackApiChatPostMessageRequest::new(SlackChannelId(to.channel.clone()), content)
            .opt_thread_ts(thread)
            .with_unfurl_links(false)
            .with_unfurl_media(false);
        let sent = timed(session.chat_post_message(&req))
            .await
            .map_err(error)?;
        Ok(SentMessage {
            to: ChannelRef {
                channel: sent.channel.0,
                thread: to.thread.clone(),
            },
            message_id: sent.ts.0,
        })
    }

    pub(super) async fn update(
        &self,
        sent: &SentMessage,
        message: &OutgoingMessage,
    ) -> Result<(), AdapterError> {
        let mut content = content(message)?;
        // An update keeps what it does not name: say "no buttons" outright.
        if content.blocks.is_none() {
            content.blocks = Some(Vec::new());
        }
        if content.attachments.is_none() {
            content.attachments = Some(Vec::new());
        }
        if content.text.is_none() {
            content.text = Some(render::fallback(message));
        }
        let req = SlackApiChatUpdateRequest::new(
            SlackChannelId(sent.to.channel.clone()),
            content,
            SlackTs(sent.message_id.clone()),
        );
        timed(self.client.open_session(&self.token).chat_update(&req))
            .await
            .map_err(error)?;
        Ok(())
    }

    pub(super) async fn react(&self, sent: &SentMessage, name: &str) -> Result<(), AdapterError> {
        let req = SlackApiReactionsAddRequest::new(
            SlackChannelId(sent.to.channel.clone()),
            SlackReactionName(name.to_owned()),
            SlackTs(sent.message_id.clone()),
        );
        match timed(self.client.open_session(&self.token).reactions_add(&req)).await {
            Ok(_) => Ok(()),
            Err(SlackClientError::ApiError(e)) if e.code == "already_reacted" => Ok(()),
            Err(e) => Err(error(e)),
        }
    }

    /// A person's display name (`users.info`): the display name, else the
    /// real name, else the user name.
    pub(super) async fn display_name(&self, user: &str) -> Result<Option<String>, AdapterError> {
        let req = SlackApiUsersInfoRequest::new(SlackUserId(user.to_owned()));
        let found = timed(self.client.open_session(&self.token).users_info(&req))
            .await
            .map_err(error)?;
        let profile = found.user.profile.as_ref();
        let pick = |s: Option<&String>| s.filter(|s| !s.trim().is_empty()).cloned();
        Ok(pick(profile.and_then(|p| p.display_name.as_ref()))
            .or_else(|| pick(profile.and_then(|p| p.real_name.as_ref())))
            .or_else(|| pick(found.user.name.as_ref())))
    }
}

/// An answer to a slash command through its `response_url` (the command's
/// channel may be one the bot is not in).
pub(super) async fn respond(
    http: &reqwest::Client,
    response_url: &str,
    message: &OutgoingMessage,
) -> Result<(), AdapterError> {
    let mut body = render::content(message);
    body["response_type"] = Value::String("in_channel".into());
    let answer = http
        .post(response_url)
        .json(&body)
        .send()
        .await
        .map_err(|e| crate::common::http_error(PLATFORM, None, None, e))?;
    let status = answer.status().as_u16();
    if answer.status().is_success() {
        Ok(())
    } else {
        Err(crate::common::http_error(
            PLATFORM,
            Some(status),
            None,
            format!("response_url answered HTTP {status}"),
        ))
    }
}
