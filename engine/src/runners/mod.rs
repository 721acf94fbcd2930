//! Runners: the code that actually performs an action, one file per runner
//! kind. Their shape (trait, context, outcome, registry) is [`crate::runner`].

pub(crate) mod chat_post;
pub(crate) mod core;
pub(crate) mod echo;
pub(crate) mod http;
pub(crate) mod noop;
pub(crate) mod output;
mod process;
pub(crate) mod python;

pub use python::prepare_pack as prepare_python_pack;
pub(crate) mod shell;

pub use output::{OutputSink, OutputWriter};

pub(crate) use crate::runner::runner_param;
pub use crate::runner::{
    DEFAULT_TIMEOUT_SECS, DuplicateRunner, OutputLimits, Retry, RunContext, RunHost, RunOutcome,
    Runner, RunnerRegistry, RunnerTraits,
};

#[cfg(test)]
mod tests {
    use crate::engine::builtin_runners;

    #[test]
    fn builtin_runners_register_without_duplicates() {
        let registry = builtin_runners();
        assert_eq!(
            registry.names().len(),
            crate::engine::builtin_runner_list_for(&Default::default()).len()
        );
    }

    #[test]
    fn runner_names_are_stackstorm_compatible() {
        let registry = builtin_runners();
        assert_eq!(
            registry.names(),
            vec![
                "announcement",
                "chat-post",
                "echo",
                "http-request",
                "inject-trigger",
                "inquirer",
                "local-shell-cmd",
                "local-shell-script",
                "noop",
                "orquesta",
                "pause",
                "python-script",
                "sendmail",
                "uuid",
                "workflow"
            ]
        );
    }
}
