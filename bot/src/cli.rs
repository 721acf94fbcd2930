//! The `squall` command line. Commands that read or change state work either
//! against a running server (`--server`, with an API key) or directly on the
//! database named by the configuration.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "squall",
    version,
    about = "ChatOps automation: rules, actions, workflows and chat in one binary"
)]
pub struct Cli {
    /// Configuration file (default: ./squall.toml when present).
    #[arg(long, short = 'c', global = true, env = "SQUALL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Talk to a running server at this URL instead of opening the database.
    #[arg(long, global = true, env = "SQUALL_SERVER")]
    pub server: Option<String>,
    /// API key for --server.
    #[arg(long, global = true, env = "SQUALL_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: HTTP API, rules, workers.
    Serve {
        /// Also take chat commands from this terminal (the console adapter).
        #[arg(long)]
        console: bool,
        /// The console user (identity `console:<user>`).
        #[arg(long, default_value = "local")]
        user: String,
    },
    /// Chat with squall in this terminal: every line is a command.
    Chat {
        /// The console user (identity `console:<user>`).
        #[arg(long, default_value = "local")]
        user: String,
    },
    /// Run an action and wait for its result: `squall run core.local cmd='uname -a'`.
    Run(RunArgs),
    /// Inspect executions.
    #[command(subcommand)]
    Execution(ExecutionCommand),
    /// Approval requests (inquiries) of workflows.
    #[command(subcommand)]
    Inquiry(InquiryCommand),
    /// Inspect rules.
    #[command(subcommand)]
    Rule(RuleCommand),
    /// Work with packs.
    #[command(subcommand)]
    Pack(PackCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Apikey(ApikeyCommand),
    /// Inspect chat permissions (rbac/).
    #[command(subcommand)]
    Rbac(RbacCommand),
    /// Try chat aliases without a chat.
    #[command(subcommand)]
    Alias(AliasCommand),
    /// The key-value datastore (`st2kv`): values templates read, secrets
    /// encrypted at rest.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Fire triggers by hand.
    #[command(subcommand)]
    Trigger(TriggerCommand),
    /// The audit log: who did what, from where.
    #[command(subcommand)]
    Audit(AuditCommand),
}

/// Where a pair lives.
#[derive(Debug, Args)]
pub struct KeyScope {
    /// `system` or `user:<name>`.
    #[arg(long, default_value = "system")]
    pub scope: String,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List pairs (secrets masked unless --decrypt).
    List {
        /// Only this scope (`system` or `user:<name>`); default: every scope.
        #[arg(long)]
        scope: Option<String>,
        /// Only names starting with this.
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long)]
        decrypt: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show one pair (a secret masked unless --decrypt).
    Get {
        name: String,
        #[command(flatten)]
        scope: KeyScope,
        #[arg(long)]
        decrypt: bool,
        #[arg(long)]
        json: bool,
    },
    /// Store a pair: VALUE is text, or JSON with --json.
    Set {
        name: String,
        value: String,
        #[command(flatten)]
        scope: KeyScope,
        /// Encrypt the value at rest; it is masked everywhere it is shown.
        #[arg(long)]
        secret: bool,
        /// Seconds until the pair expires.
        #[arg(long)]
        ttl: Option<u64>,
        /// Parse VALUE as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a pair.
    Delete {
        name: String,
        #[command(flatten)]
        scope: KeyScope,
    },
    /// Re-encrypt every secret with a new key (on the server's machine;
    /// safe to stop and run again).
    Rotate,
}

#[derive(Debug, Subcommand)]
pub enum RbacCommand {
    /// Validate rbac/ and list roles and their grants.
    Show,
    /// Whether IDENTITY (platform:user_id) holds GRANT (e.g. alias:examples.deploy); exit status 1 if not.
    Check { identity: String, grant: String },
}

#[derive(Debug, Subcommand)]
pub enum AliasCommand {
    /// Show which alias and parameters a chat command resolves to.
    Match { text: String },
    /// List chat commands (optionally those matching a filter), as `!help`
    /// shows them.
    List { filter: Option<String> },
    /// Run a chat command without a chat (as `squall run` does for actions);
    /// with --server, on behalf of the API key.
    Execute {
        text: String,
        /// Seconds to wait for the results.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Action reference, `pack.name`.
    pub action: String,
    /// Parameters as `name=value` (values are cast to the parameter's type;
    /// JSON for objects and arrays).
    pub parameters: Vec<String>,
    /// Seconds to wait for the result.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Print the execution as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ExecutionCommand {
    /// List executions, newest first.
    List {
        #[arg(long)]
        action: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long, short = 'n', default_value_t = 20)]
        limit: u64,
        #[arg(long)]
        json: bool,
    },
    /// Show one execution with its trigger, rule, parameters, result and output.
    Get {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Cancel an execution; a workflow's running tasks are stopped with it.
    Cancel { id: String },
    /// Pause a workflow: running tasks finish, no new task starts.
    Pause { id: String },
    /// Resume a paused workflow.
    Resume { id: String },
    /// Follow an execution's output line by line until it ends (exits 0
    /// when it succeeded). An execution that already ended prints its output.
    Tail { id: String },
    /// Run an execution again with the same parameters.
    Rerun {
        id: String,
        /// Workflows: keep the tasks that succeeded, run the failed ones again.
        #[arg(long)]
        failed: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum InquiryCommand {
    /// List approval requests (pending ones unless --all).
    List {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show one approval request with its votes.
    Get {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Answer an approval request: `squall inquiry respond ID '{"approved": true}'`.
    Respond {
        id: String,
        /// The response as JSON, matching the request's schema.
        response: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RuleCommand {
    /// List rules.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Enable a rule (overrides its pack file until changed again).
    Enable { reference: String },
    /// Disable a rule (overrides its pack file until changed again).
    Disable { reference: String },
}

#[derive(Debug, Subcommand)]
pub enum PackCommand {
    /// Validate pack directories (default: the configured ones); exits non-zero on any error.
    Validate { dirs: Vec<PathBuf> },
    /// Prepare packs to run: build the virtualenv of every loaded pack with python
    /// actions and a requirements.txt (otherwise built at its first run).
    Install { dirs: Vec<PathBuf> },
    /// List packs with where they come from and whether they load.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApikeyCommand {
    /// Create an API key and print it once.
    Create {
        #[arg(long, default_value = "default")]
        name: String,
    },
    /// List API keys (ids, names, states; keys themselves are never stored).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Disable an API key, by id or name (every enabled key of that name).
    Revoke { key: String },
}

#[derive(Debug, Subcommand)]
pub enum TriggerCommand {
    /// Fire a trigger: rules on it run as if its source had fired it.
    Fire {
        /// The trigger type, e.g. `squall.alert` or a pack's `pack.name`.
        trigger: String,
        /// The payload as JSON.
        #[arg(long, default_value = "{}")]
        payload: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Audit rows, newest first.
    List {
        /// Who did it (`api:<key name>`, `slack:U123`, `cli:<user>`).
        #[arg(long)]
        actor: Option<String>,
        /// A kind (`execution.cancel`) or a family (`execution`, `key`, `rule`).
        #[arg(long)]
        kind: Option<String>,
        /// What it was done to (an execution id, a key, a rule).
        #[arg(long)]
        subject: Option<String>,
        /// From this time: RFC 3339, or a duration ago (`30m`, `2h`, `7d`).
        #[arg(long)]
        since: Option<String>,
        /// Before this time: RFC 3339, or a duration ago.
        #[arg(long)]
        until: Option<String>,
        #[arg(long, short = 'n', default_value_t = 50)]
        limit: u64,
        #[arg(long)]
        json: bool,
    },
}

/// Parse `name=value` arguments. Values stay text here; the action's
/// parameter types decide the casts.
pub fn parse_assignments(
    args: &[String],
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let mut map = serde_json::Map::new();
    for arg in args {
        let Some((name, value)) = arg.split_once('=') else {
            return Err(format!("parameter {arg:?} is not name=value"));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("parameter {arg:?} has no name before '='"));
        }
        if map
            .insert(name.to_owned(), serde_json::Value::String(value.to_owned()))
            .is_some()
        {
            return Err(format!("parameter {name:?} is given twice"));
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_keep_equals_signs_in_values() {
        let map = parse_assignments(&["cmd=echo a=b".into()]).expect("valid");
        assert_eq!(map["cmd"], "echo a=b");
    }

    #[test]
    fn assignment_without_equals_is_an_error() {
        assert!(parse_assignments(&["oops".into()]).is_err());
    }

    #[test]
    fn duplicate_assignment_is_an_error() {
        assert!(parse_assignments(&["a=1".into(), "a=2".into()]).is_err());
    }
}

#[cfg(test)]
mod clap_tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
