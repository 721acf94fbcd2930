//! Who may answer an inquiry, and what an answer must look like. Every entry
//! point (chat reactions, buttons, `approve`/`deny`, CLI, API) votes through
//! [`vote`], so the rules are the same everywhere.

use serde_json::{Value, json};

use crate::execution::ms_to_rfc3339;
use crate::store::{
    AuditEntry, Decision, Store, StoreError, VoteRecord, VoteResult, inquiry, inquiry_vote,
};

/// The person voting, as RBAC knows them.
#[derive(Debug, Clone)]
pub struct Voter {
    /// `platform:user` (chat) or `api:<key name>`.
    pub identity: String,
    pub roles: Vec<String>,
    /// Holds the `inquiry:respond` permission.
    pub may_respond: bool,
}

/// What the voter says.
#[derive(Debug, Clone, PartialEq)]
pub enum Vote {
    /// Approve, optionally with a response for the inquiry's schema.
    Approve(Option<Value>),
    Deny(Option<String>),
    /// Take back an earlier vote (a removed reaction).
    Withdraw,
}

/// What became of a vote.
#[derive(Debug, Clone, PartialEq)]
pub enum VoteOutcome {
    NotFound,
    /// Already decided: the inquiry's status.
    Closed(String),
    /// Not allowed; the reason says why.
    Refused(String),
    /// The response does not fit the schema.
    Invalid(String),
    Recorded {
        approvals: usize,
        required: usize,
    },
    Withdrawn {
        approvals: usize,
        required: usize,
    },
    Decided(Decision),
}

/// The parameters an inquiry was created with.
pub fn params(inq: &inquiry::Model) -> Value {
    serde_json::from_str(&inq.params).unwrap_or_else(|_| json!({}))
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// An inquiry as the API and the CLI show it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct InquiryView {
    pub id: String,
    /// `pending`, `approved`, `denied`, `expired` or `canceled`.
    pub status: String,
    /// The execution that asked.
    pub execution: String,
    pub workflow: Option<String>,
    pub requester: Option<String>,
    /// JSON schema an answer must satisfy.
    pub schema: Value,
    pub users: Value,
    pub roles: Value,
    pub approvers_required: usize,
    pub allow_self_approval: Value,
    pub message: Value,
    pub response: Value,
    pub decided_by: Value,
    /// RFC 3339.
    pub decided_at: Option<String>,
    pub expires_at: Option<String>,
    pub created_at: String,
    /// Only when one inquiry is shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub votes: Option<Vec<VoteView>>,
}

/// One vote on an inquiry.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct VoteView {
    pub voter: String,
    pub approve: bool,
    /// RFC 3339.
    pub at: String,
}

/// An inquiry as JSON; `votes` adds its votes.
pub fn view(inq: &inquiry::Model, votes: Option<&[inquiry_vote::Model]>) -> Value {
    serde_json::to_value(summary(inq, votes)).unwrap_or(Value::Null)
}

/// The typed form of [`view`].
pub fn summary(inq: &inquiry::Model, votes: Option<&[inquiry_vote::Model]>) -> InquiryView {
    let params = params(inq);
    let json_of = |s: &Option<String>| {
        s.as_deref()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
            .unwrap_or(Value::Null)
    };
    let field = |name: &str| params.get(name).cloned().unwrap_or(Value::Null);
    InquiryView {
        id: inq.id.clone(),
        status: inq.status.clone(),
        execution: inq.execution_id.clone(),
        workflow: inq.workflow_id.clone(),
        requester: inq.requester.clone(),
        schema: field("schema"),
        users: field("users"),
        roles: field("roles"),
        approvers_required: required(&params),
        allow_self_approval: field("allow_self_approval"),
        message: field("message"),
        response: json_of(&inq.response),
        decided_by: json_of(&inq.decided_by),
        decided_at: inq.decided_at.map(ms_to_rfc3339),
        expires_at: inq.expires_at.map(ms_to_rfc3339),
        created_at: ms_to_rfc3339(inq.created_at),
        votes: votes.map(|votes| {
            votes
                .iter()
                .map(|v| VoteView {
                    voter: v.voter.clone(),
                    approve: v.approve,
                    at: ms_to_rfc3339(v.at),
                })
                .collect()
        }),
    }
}

/// Approvals an inquiry needs.
pub fn required(params: &Value) -> usize {
    params
        .get("approvers_required")
        .and_then(Value::as_u64)
        .map_or(1, |n| usize::try_from(n).unwrap_or(1))
        .max(1)
}

/// Who may answer, in words (for prompts and refusals).
pub fn who_may_answer(params: &Value) -> String {
    let users = strings(params.get("users"));
    let roles = strings(params.get("roles"));
    let mut parts = Vec::new();
    if !users.is_empty() {
        parts.push(users.join(", "));
    }
    if !roles.is_empty() {
        parts.push(format!("role {}", roles.join(", ")));
    }
    if parts.is_empty() {
        "anyone with the inquiry:respond permission".into()
    } else {
        parts.join(" or ")
    }
}

/// Check and record one vote.
pub async fn vote(
    store: &Store,
    inquiry_id: &str,
    voter: &Voter,
    vote: Vote,
) -> Result<VoteOutcome, StoreError> {
    let Some(inq) = store.get_inquiry(inquiry_id).await? else {
        return Ok(VoteOutcome::NotFound);
    };
    if inq.status != "pending" {
        return Ok(VoteOutcome::Closed(inq.status));
    }
    let params = params(&inq);
    if let Some(reason) = refusal(&inq, &params, voter, &vote) {
        store
            .append_audit(&[AuditEntry {
                actor: voter.identity.clone(),
                kind: "inquiry.vote_refused".into(),
                subject: inq.id.clone(),
                detail: json!({ "vote": vote_name(&vote), "reason": reason }),
            }])
            .await?;
        return Ok(VoteOutcome::Refused(reason));
    }
    let record = match vote.clone() {
        Vote::Approve(response) => {
            let response = response.unwrap_or_else(|| json!({"approved": true}));
            let schema = params
                .get("schema")
                .cloned()
                .unwrap_or_else(super::workflow::inquirer::default_schema);
            if let Some(problem) = schema_problem(&schema, &response) {
                return Ok(VoteOutcome::Invalid(problem));
            }
            if response.get("approved") == Some(&Value::Bool(false)) {
                VoteRecord::Deny(response)
            } else {
                VoteRecord::Approve(response)
            }
        }
        Vote::Deny(reason) => VoteRecord::Deny(json!({"approved": false, "reason": reason})),
        Vote::Withdraw => VoteRecord::Withdraw,
    };
    let kind = match &record {
        VoteRecord::Approve(_) => "approve",
        VoteRecord::Deny(_) => "deny",
        VoteRecord::Withdraw => "withdraw",
    };
    let audit = vec![AuditEntry {
        actor: voter.identity.clone(),
        kind: "inquiry.vote".into(),
        subject: inq.id.clone(),
        detail: json!({ "vote": kind }),
    }];
    let withdraw = record == VoteRecord::Withdraw;
    Ok(
        match store
            .record_vote(&inq.id, &voter.identity, record, required(&params), audit)
            .await?
        {
            VoteResult::NotFound => VoteOutcome::NotFound,
            VoteResult::Closed(status) => VoteOutcome::Closed(status),
            VoteResult::Open {
                approvals,
                required,
            } if withdraw => VoteOutcome::Withdrawn {
                approvals,
                required,
            },
            VoteResult::Open {
                approvals,
                required,
            } => VoteOutcome::Recorded {
                approvals,
                required,
            },
            VoteResult::Decided(decision) => VoteOutcome::Decided(decision),
        },
    )
}

fn vote_name(vote: &Vote) -> &'static str {
    match vote {
        Vote::Approve(_) => "approve",
        Vote::Deny(_) => "deny",
        Vote::Withdraw => "withdraw",
    }
}

fn refusal(inq: &inquiry::Model, params: &Value, voter: &Voter, vote: &Vote) -> Option<String> {
    if !voter.may_respond {
        return Some(format!(
            "{} lacks the inquiry:respond permission.",
            voter.identity
        ));
    }
    let users = strings(params.get("users"));
    let roles = strings(params.get("roles"));
    let listed = users.contains(&voter.identity) || voter.roles.iter().any(|r| roles.contains(r));
    if (!users.is_empty() || !roles.is_empty()) && !listed {
        return Some(format!(
            "only {} may answer this request.",
            who_may_answer(params)
        ));
    }
    let self_approval = params
        .get("allow_self_approval")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let approving = matches!(vote, Vote::Approve(r) if r.as_ref().and_then(|r| r.get("approved")) != Some(&Value::Bool(false)));
    if approving && !self_approval && inq.requester.as_deref() == Some(voter.identity.as_str()) {
        return Some(format!(
            "{} started this execution and cannot approve it; someone else must.",
            voter.identity
        ));
    }
    None
}

fn schema_problem(schema: &Value, response: &Value) -> Option<String> {
    let validator = match jsonschema::validator_for(schema) {
        Ok(v) => v,
        Err(e) => return Some(format!("the inquiry's schema is invalid: {e}")),
    };
    let problems: Vec<String> = validator
        .iter_errors(response)
        .map(|e| {
            let at = e.instance_path().to_string();
            if at.is_empty() {
                e.to_string()
            } else {
                format!("{at}: {e}")
            }
        })
        .collect();
    (!problems.is_empty()).then(|| {
        format!(
            "the response does not match the inquiry's schema: {}",
            problems.join("; ")
        )
    })
}
