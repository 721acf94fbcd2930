//! Warm interpreters: python processes started ahead of the runs that will
//! use them, so a run does not wait for the interpreter to start and import
//! the compatibility layer (about 30 ms, the whole cost of a run that does
//! little).
//!
//! A spare is the runner's script, started with the pack's interpreter and
//! waiting on stdin; a run takes one and hands it its spec there, exactly as a
//! freshly started one gets it. Each spare serves one run and exits, so runs
//! share nothing. Taking a spare starts its replacement. A spare no run took
//! exits by itself after [`IDLE_EXIT`]; squall stops handing one out a margin
//! before that.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::process::Child;

use crate::runners::process::{ProcessSpec, kill_group};

/// How long a spare waits for a run before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(300);

/// A spare older than this is not handed out (it may be exiting).
const HAND_OUT_BEFORE: Duration = Duration::from_secs(270);

/// Spare interpreters, per interpreter path.
pub struct WarmPool {
    per_interpreter: usize,
    idle: Mutex<HashMap<PathBuf, VecDeque<Spare>>>,
}

struct Spare {
    child: Child,
    started: Instant,
}

impl Spare {
    /// Alive and young enough to hand out.
    fn usable(&mut self) -> bool {
        self.started.elapsed() < HAND_OUT_BEFORE && matches!(self.child.try_wait(), Ok(None))
    }

    fn discard(self) {
        kill_group(self.child.id().and_then(|id| i32::try_from(id).ok()));
    }
}

impl WarmPool {
    /// Keep `per_interpreter` spares of each interpreter that has run once;
    /// 0 keeps none (every run starts its interpreter).
    pub fn new(per_interpreter: usize) -> Self {
        Self {
            per_interpreter,
            idle: Mutex::new(HashMap::new()),
        }
    }

    /// A started spare of `spec.program` for a run, if one is ready; either way
    /// the spares of that interpreter are topped up (starting spares is a
    /// fork and exec; the interpreter's own start-up happens in the child).
    /// `spec` is how the interpreter starts, without per-run environment; a
    /// spare also gets `SQUALL_IDLE_EXIT`.
    pub fn take(&self, spec: &ProcessSpec) -> Option<Child> {
        if self.per_interpreter == 0 {
            return None;
        }
        let mut spec = spec.clone();
        spec.env.insert(
            "SQUALL_IDLE_EXIT".to_owned(),
            IDLE_EXIT.as_secs().to_string(),
        );
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // Spares of interpreters no run asks for any more (a rebuilt
        // virtualenv, a removed pack) go once they exited or aged.
        idle.retain(|program, spares| {
            if program.as_os_str() != spec.program.as_str() {
                spares.retain_mut(Spare::usable);
            }
            !spares.is_empty() || program.as_os_str() == spec.program.as_str()
        });
        let spares = idle.entry(PathBuf::from(&spec.program)).or_default();
        let mut taken = None;
        while let Some(mut spare) = spares.pop_front() {
            if spare.usable() {
                taken = Some(spare.child);
                break;
            }
            spare.discard();
        }
        spares.retain_mut(|spare| spare.started.elapsed() < HAND_OUT_BEFORE);
        while spares.len() < self.per_interpreter {
            match spec.start(true) {
                Ok(child) => spares.push_back(Spare {
                    child,
                    started: Instant::now(),
                }),
                Err(error) => {
                    tracing::debug!(error = %error.message, "could not start a spare python interpreter");
                    break;
                }
            }
        }
        taken
    }

    /// How many spares of `python` are waiting.
    #[cfg(test)]
    fn waiting(&self, python: &std::path::Path) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.get(python).map_or(0, VecDeque::len)
    }
}

impl Drop for WarmPool {
    fn drop(&mut self) {
        let idle = self.idle.get_mut().unwrap_or_else(|e| e.into_inner());
        for (_, spares) in idle.drain() {
            spares.into_iter().for_each(Spare::discard);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::Path;

    fn spare_spec() -> ProcessSpec {
        // Stands in for an interpreter: waits for its stdin and echoes it.
        ProcessSpec {
            program: "/bin/cat".into(),
            args: vec![],
            env: BTreeMap::new(),
            cwd: None,
            timeout: Duration::from_secs(10),
            stdin: None,
        }
    }

    #[tokio::test]
    async fn a_run_takes_the_spare_started_by_the_one_before() {
        let pool = WarmPool::new(1);
        let spec = spare_spec();
        assert!(pool.take(&spec).is_none(), "nothing was started yet");
        assert_eq!(pool.waiting(Path::new("/bin/cat")), 1);
        let mut child = pool
            .take(&spec)
            .expect("the spare started by the first take");
        assert!(matches!(child.try_wait(), Ok(None)), "the spare is alive");
        // And the spare taken was replaced.
        assert_eq!(pool.waiting(Path::new("/bin/cat")), 1);
    }

    #[tokio::test]
    async fn a_spare_that_died_is_not_handed_out() {
        let pool = WarmPool::new(1);
        let spec = spare_spec();
        pool.take(&spec);
        let mut spare = pool
            .idle
            .lock()
            .unwrap()
            .get_mut(Path::new("/bin/cat"))
            .and_then(VecDeque::pop_front)
            .expect("a spare");
        spare.child.start_kill().unwrap();
        spare.child.wait().await.unwrap();
        pool.idle
            .lock()
            .unwrap()
            .get_mut(Path::new("/bin/cat"))
            .unwrap()
            .push_back(spare);
        assert!(
            pool.take(&spec).is_none(),
            "a dead spare is never handed out"
        );
        assert_eq!(pool.waiting(Path::new("/bin/cat")), 1);
    }

    #[tokio::test]
    async fn no_spares_are_kept_when_warm_interpreters_are_off() {
        let pool = WarmPool::new(0);
        assert!(pool.take(&spare_spec()).is_none());
        assert_eq!(pool.waiting(Path::new("/bin/cat")), 0);
    }
}
