//! Any external program as an automation: the agent starts the program once per task, hands it
//! the task, reads what it reports line by line, and turns its exit into an [`Outcome`].
//!
//! What the program gets:
//! - on stdin, one JSON object, then end of file: `{"task_id", "attempt", "system",
//!   "description", "payload", "resume_after_row", "attachment_path"}` (a program that does not
//!   read it is fine);
//! - the environment variables [`TASK_ID_VAR`], [`ATTEMPT_VAR`], [`SYSTEM_VAR`],
//!   [`RESUME_AFTER_ROW_VAR`] and, with a CSV, [`ATTACHMENT_VAR`]: the path of a temporary copy
//!   of the CSV (mode 0600, removed after the run), plus the [`Program`]'s own `env`. The agent's
//!   own `BOTLINE_*` settings are not passed on: credentials are among them.
//!
//! What it may print on stdout, one JSON object per line:
//! - `{"row": 3, "status": "CREATED", "message": "…"}`: row 3 (1-based) of the CSV is done;
//!   statuses CREATED, REJECTED, FAILED, DONE in any case; `message` optional. Rows up to the
//!   task's `resume_after_row` were done by an earlier attempt and are ignored, as is a row
//!   reported twice; a row outside the CSV fails the task (the program is stopped).
//! - `{"progress": {"done": 3, "total": 10}}`: how far it is.
//! - `{"log": "…"}`: a log line.
//! - `{"result": …}`: the task's output.
//!
//! Anything else on stdout, and all of stderr, is kept as log lines: [`Ran::log`] holds the last
//! [`LOG_TAIL_BYTES`] of them. Exit status 0 completes the task, [`EX_TEMPFAIL`] asks for another
//! attempt, any other status fails it for good; a program killed by a signal may be retried.
//!
//! The program runs in a process group of its own: cancellation and [`Program::max_run_time`]
//! send SIGTERM to the whole group, then SIGKILL after [`Program::cancel_grace`]; after a normal
//! exit the group gets SIGKILL too, so that nothing the program started outlives the task.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::Permissions;
use std::future::Future;
use std::io::{self, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use broker_config::{Assignment, Attachment, RowOutcome, RowStatus};
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::Deserialize;
use serde_json::{Value, json};
use tempfile::NamedTempFile;
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _, AsyncRead, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{NO_SIZE_LIMIT, Outcome};
use crate::progress::ProgressSink;

/// How much of the program's log [`Ran::log`] keeps: its last 64 KiB.
pub const LOG_TAIL_BYTES: usize = 64 * 1024;

/// The longest line read from the program's stdout or stderr: a longer line is cut to this
/// (and kept as a log line), so that a program printing without line breaks cannot fill memory.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// The exit status that asks for another attempt (`EX_TEMPFAIL` in sysexits.h).
pub const EX_TEMPFAIL: i32 = 75;

/// How long a program has between SIGTERM and SIGKILL when its configuration does not say.
pub const DEFAULT_CANCEL_GRACE: Duration = Duration::from_secs(10);

/// How long output is still read once the program has exited. Its process group is killed at
/// its exit, which closes the pipes of everything in it; a process that left the group (with
/// `setsid`) may still hold them open, and must not keep the task running.
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);

/// The task's id, in the program's environment.
pub const TASK_ID_VAR: &str = "BOTLINE_TASK_ID";
/// The attempt number, in the program's environment.
pub const ATTEMPT_VAR: &str = "BOTLINE_ATTEMPT";
/// The task's system (`VIVO360`, …), in the program's environment.
pub const SYSTEM_VAR: &str = "BOTLINE_SYSTEM";
/// The rows done by earlier attempts (rows `1..=N` are to be skipped), in the program's
/// environment.
pub const RESUME_AFTER_ROW_VAR: &str = "BOTLINE_RESUME_AFTER_ROW";
/// The path of the CSV attachment's temporary copy, in the program's environment (only for a
/// task with an attachment).
pub const ATTACHMENT_VAR: &str = "BOTLINE_ATTACHMENT";

/// The prefix of the agent's own settings, which a program does not inherit.
const AGENT_SETTINGS_PREFIX: &str = "BOTLINE_";

/// Lines in flight between the output readers and the supervising loop: with lines of at most
/// [`MAX_LINE_BYTES`], this bounds the memory of a program that prints faster than it is read.
const LINES_IN_FLIGHT: usize = 64;

/// The longest stderr line quoted in an error: errors travel in events and show in the console.
const ERROR_LINE_BYTES: usize = 512;

/// How to run one system's automation as a program (from `--automation NAME=COMMAND` or a TOML
/// file). In TOML:
///
/// ```toml
/// command = "python3"            # a name looked up on PATH, or a path
/// args = ["-u", "create_users.py"]
/// workdir = "/opt/bots/vivo360"  # optional; the agent's own by default
/// env = { PORTAL_URL = "https://portal.example" }
/// shell = false                  # true: `command` is a script for `sh -c`
/// max_run_seconds = 600          # optional; no limit by default
/// cancel_grace_seconds = 10      # between SIGTERM and SIGKILL
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Program {
    /// The program: a name looked up on PATH (the `env`'s PATH if it sets one), or a path (a
    /// relative one is relative to the agent's working directory, not `workdir`). With `shell`,
    /// the script `sh -c` runs.
    pub command: String,
    /// The arguments. With `shell`, they are the script's `$1`, `$2`, … (`$0` is `sh`).
    #[serde(default)]
    pub args: Vec<String>,
    /// The working directory of the program; the agent's own when `None`.
    #[serde(default)]
    pub workdir: Option<PathBuf>,
    /// Environment variables set for the program, on top of the agent's environment (less the
    /// agent's own `BOTLINE_*` settings).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Run `command` through `sh -c`: only when asked, as quoting then becomes the shell's.
    #[serde(default)]
    pub shell: bool,
    /// How long one run may take before it is stopped (and the task failed, retryable); no
    /// limit when `None`.
    #[serde(default, rename = "max_run_seconds", deserialize_with = "seconds::positive")]
    pub max_run_time: Option<Duration>,
    /// How long the program has to end after SIGTERM (cancellation, time-out) before SIGKILL.
    #[serde(
        default = "default_cancel_grace",
        rename = "cancel_grace_seconds",
        deserialize_with = "seconds::any"
    )]
    pub cancel_grace: Duration,
}

fn default_cancel_grace() -> Duration {
    DEFAULT_CANCEL_GRACE
}

/// Durations in configuration files are numbers of seconds (`600`, `0.5`).
mod seconds {
    use std::time::Duration;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer};

    /// A number of seconds, zero included.
    pub(super) fn any<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let seconds = f64::deserialize(deserializer)?;
        Duration::try_from_secs_f64(seconds).map_err(|_| {
            D::Error::custom(format!("expected a number of seconds (0 or more), got {seconds}"))
        })
    }

    /// A number of seconds above zero: a limit of zero would stop every run at once.
    pub(super) fn positive<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        let duration = any(deserializer)?;
        if duration.is_zero() {
            return Err(D::Error::custom("expected a number of seconds above 0, got 0"));
        }
        Ok(Some(duration))
    }
}

/// Why a [`Program`] cannot be used. Each message names the command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProgramError {
    /// No command at all.
    #[error("the automation command is empty")]
    Empty,
    /// The command line's quoting is broken.
    #[error("cannot split the automation command `{text}` into words: {reason}")]
    Unsplittable {
        /// The command line.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A bare name found in no directory of PATH.
    #[error("automation command `{command}` not found on PATH ({path})")]
    NotOnPath {
        /// The name.
        command: String,
        /// The PATH searched.
        path: String,
    },
    /// A path that cannot be looked at.
    #[error("automation command `{command}`: cannot use {}: {reason}", .path.display())]
    Unreachable {
        /// The command as configured.
        command: String,
        /// The path looked at.
        path: PathBuf,
        /// The operating system's reason.
        reason: String,
    },
    /// A path that is a directory, or a file without execute permission.
    #[error("automation command `{command}`: {} is not an executable file", .path.display())]
    NotExecutable {
        /// The command as configured.
        command: String,
        /// The path looked at.
        path: PathBuf,
    },
    /// A working directory that is not one.
    #[error(
        "automation command `{command}`: working directory {} is not usable: {reason}",
        .workdir.display()
    )]
    Workdir {
        /// The command as configured.
        command: String,
        /// The working directory.
        workdir: PathBuf,
        /// Why it is not usable.
        reason: String,
    },
}

/// What a run of a program gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Ran {
    /// How the task ended. Row outcomes went through the [`ProgressSink`].
    pub outcome: Outcome,
    /// The last [`LOG_TAIL_BYTES`] of the log: stderr, `{"log": …}` lines, stdout lines that are
    /// not reports, and the agent's notes about the run, in arrival order, one per line.
    pub log: String,
    /// The last `{"progress": {"done", "total"}}` reported, as `(done, total)`.
    pub progress: Option<(u64, u64)>,
}

/// util-linux's `setpriv`, where the system has it (Debian, Ubuntu, RHEL: package util-linux).
fn death_signal_wrapper() -> Option<&'static Path> {
    ["/usr/bin/setpriv", "/bin/setpriv"].into_iter().map(Path::new).find(|path| path.is_file())
}

impl Program {
    /// A program run with no arguments and every default.
    pub fn new(command: impl Into<String>) -> Program {
        Program {
            command: command.into(),
            args: Vec::new(),
            workdir: None,
            env: BTreeMap::new(),
            shell: false,
            max_run_time: None,
            cancel_grace: DEFAULT_CANCEL_GRACE,
        }
    }

    /// The `COMMAND` of `--automation NAME=COMMAND`: words split as a shell would (quotes,
    /// backslashes, `#` comments), the first one the program and the others its arguments. No
    /// shell runs it: `$VAR`, globs and pipes are not expanded.
    pub fn from_command_line(text: &str) -> Result<Program, ProgramError> {
        let words = shell_words::split(text).map_err(|error| ProgramError::Unsplittable {
            text: text.to_owned(),
            reason: error.to_string(),
        })?;
        let mut words = words.into_iter();
        let command = words.next().filter(|word| !word.is_empty()).ok_or(ProgramError::Empty)?;
        Ok(Program { args: words.collect(), ..Program::new(command) })
    }

    /// Checks that the program can be started: the command (`sh` with `shell`) is an executable
    /// file, found on PATH for a bare name, and the working directory is a directory. The agent
    /// refuses to start with this error.
    pub fn check(&self) -> Result<(), ProgramError> {
        self.executable()?;
        if let Some(workdir) = &self.workdir {
            let problem = match std::fs::metadata(workdir) {
                Ok(metadata) if metadata.is_dir() => None,
                Ok(_) => Some("not a directory".to_owned()),
                Err(error) => Some(error.to_string()),
            };
            if let Some(reason) = problem {
                return Err(ProgramError::Workdir {
                    command: self.command.clone(),
                    workdir: workdir.clone(),
                    reason,
                });
            }
        }
        Ok(())
    }

    /// The absolute path of the file to execute: `command`, or `sh` with `shell`.
    fn executable(&self) -> Result<PathBuf, ProgramError> {
        let name = if self.shell { "sh" } else { self.command.as_str() };
        if name.is_empty() {
            return Err(ProgramError::Empty);
        }
        let executable = |path: PathBuf| match std::fs::metadata(&path) {
            Ok(metadata) if metadata.is_file() && metadata.permissions().mode() & 0o111 != 0 => {
                Ok(path)
            }
            Ok(_) => Err(ProgramError::NotExecutable { command: name.to_owned(), path }),
            Err(error) => Err(ProgramError::Unreachable {
                command: name.to_owned(),
                path,
                reason: error.to_string(),
            }),
        };
        if name.contains('/') {
            // Made absolute here, as a relative path with a working directory set means
            // different things on different platforms (std's `Command` docs).
            let path = Path::new(name);
            let absolute = if path.is_absolute() {
                path.to_owned()
            } else {
                let here = std::env::current_dir().map_err(|error| ProgramError::Unreachable {
                    command: name.to_owned(),
                    path: path.to_owned(),
                    reason: format!("the agent's working directory is unknown: {error}"),
                })?;
                here.join(path)
            };
            return executable(absolute);
        }
        let search: OsString = match self.env.get("PATH") {
            Some(path) => path.into(),
            None => std::env::var_os("PATH").unwrap_or_default(),
        };
        std::env::split_paths(&search)
            // A relative directory (an empty entry means ".") would make the program depend
            // on the working directory: a shell would look there, the agent does not.
            .filter(|directory| directory.is_absolute())
            .find_map(|directory| executable(directory.join(name)).ok())
            .ok_or_else(|| ProgramError::NotOnPath {
                command: name.to_owned(),
                path: search.to_string_lossy().into_owned(),
            })
    }

    /// Runs the program for `assignment`: records the rows it reports in `sink` as they come,
    /// and stops it (SIGTERM, then SIGKILL after `cancel_grace`) when `cancel` is cancelled or
    /// it runs past `max_run_time`. Never panics on what the program does.
    pub async fn run(
        &self,
        assignment: &Assignment,
        sink: &mut ProgressSink,
        cancel: &CancellationToken,
    ) -> Ran {
        let mut report = Report::new(&self.command, assignment);
        let outcome = self.run_task(assignment, sink, cancel, &mut report).await;
        Ran { outcome, log: report.log.into_string(), progress: report.progress }
    }

    async fn run_task(
        &self,
        assignment: &Assignment,
        sink: &mut ProgressSink,
        cancel: &CancellationToken,
        report: &mut Report,
    ) -> Outcome {
        if cancel.is_cancelled() {
            return Outcome::Cancelled;
        }
        let executable = match self.executable() {
            Ok(executable) => executable,
            Err(error) => return Outcome::fatal(error.to_string()),
        };
        let attachment = match assignment.attachment.as_deref() {
            Some(encoded) => {
                match Attachment::from_base64(encoded, &assignment.system, &[], NO_SIZE_LIMIT) {
                    Ok(attachment) => Some(attachment),
                    Err(error) => return Outcome::fatal(error.to_string()),
                }
            }
            None => None,
        };
        // Removed when dropped, at the end of this function, however the run ended.
        let attachment_file = match attachment.as_ref().map(|a| write_attachment(a, assignment)) {
            Some(Ok(file)) => Some(file),
            // A full or unwritable temporary directory is this machine's problem.
            Some(Err(error)) => {
                return Outcome::retryable(format!(
                    "cannot write the attachment to a temporary file: {error}"
                ));
            }
            None => None,
        };
        report.rows.row_count =
            attachment.as_ref().map(|a| u32::try_from(a.row_count()).unwrap_or(u32::MAX));
        let attachment_path = attachment_file.as_ref().map(NamedTempFile::path);

        let mut child = match self.command(&executable, assignment, attachment_path).spawn() {
            Ok(child) => child,
            Err(error) => {
                return Outcome::fatal(format!("cannot start `{}`: {error}", self.command));
            }
        };
        // The program is its process group's leader (`process_group(0)`): its pid is the group's.
        let group = child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw);
        let mut group_guard = GroupGuard(group);
        let task = task_json(assignment, attachment_path);
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let (lines, mut received) = mpsc::channel(LINES_IN_FLIGHT);
        let stop = CancellationToken::new();
        let supervision = async {
            let outcome =
                self.supervise(&mut child, group, &mut received, sink, cancel, report).await;
            // Whatever still holds the pipes open, the readers and the writer stop here.
            stop.cancel();
            outcome
        };
        let (outcome, _, _, stdin_error) = tokio::join!(
            supervision,
            until_stopped(&stop, read_lines(stdout, Source::Stdout, lines.clone())),
            until_stopped(&stop, read_lines(stderr, Source::Stderr, lines)),
            until_stopped(&stop, write_task(stdin, task)),
        );
        // The supervising loop ends only after the program's exit, and its group was killed
        // then: nothing is left for the guard to do.
        group_guard.disarm();
        if let Some(error) = stdin_error.flatten() {
            report.log.push(&format!("[agent] could not hand the task over on stdin: {error}"));
        }
        drop(attachment_file);
        outcome
    }

    /// The command for one task, not started yet.
    fn command(
        &self,
        executable: &Path,
        assignment: &Assignment,
        attachment: Option<&Path>,
    ) -> Command {
        // A program must not outlive an agent killed outright (SIGKILL, the OOM killer): it
        // would go on with rows nobody hears of, and the next attempt would redo them. The kernel
        // kills it when the agent dies (PR_SET_PDEATHSIG, set by util-linux's setpriv, which then
        // runs the program: the workspace forbids the `unsafe` pre_exec hook that could set it
        // here). Without setpriv, an orphan still dies at its next line, on a closed pipe.
        let mut command = match death_signal_wrapper() {
            Some(setpriv) => {
                let mut command = Command::new(setpriv);
                command.args(["--pdeathsig", "KILL", "--"]).arg(executable);
                command
            }
            None => {
                let mut command = Command::new(executable);
                command.arg0(if self.shell { "sh" } else { &self.command });
                command
            }
        };
        if self.shell {
            command.arg("-c").arg(&self.command).arg("sh");
        }
        command.args(&self.args);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with(AGENT_SETTINGS_PREFIX) {
                command.env_remove(name);
            }
        }
        command
            .envs(&self.env)
            .env(TASK_ID_VAR, assignment.task.task_id.to_string())
            .env(ATTEMPT_VAR, assignment.task.attempt.to_string())
            .env(SYSTEM_VAR, assignment.system.as_str())
            .env(RESUME_AFTER_ROW_VAR, assignment.resume_after_row.to_string());
        if let Some(path) = attachment {
            command.env(ATTACHMENT_VAR, path);
        }
        if let Some(workdir) = &self.workdir {
            command.current_dir(workdir);
        }
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so that stopping it stops everything it started.
            .process_group(0)
            // Should the agent drop the run (it is aborted), the program goes with it.
            .kill_on_drop(true);
        command
    }

    /// Watches the running program until it has exited and its output is read: takes its
    /// lines, stops it when told to, out of time or broken, and says how the task ended.
    async fn supervise(
        &self,
        child: &mut Child,
        group: Option<Pid>,
        received: &mut mpsc::Receiver<Output>,
        sink: &mut ProgressSink,
        cancel: &CancellationToken,
        report: &mut Report,
    ) -> Outcome {
        let run_deadline = self.max_run_time.map(|limit| Instant::now() + limit);
        let mut stopping: Option<Stop> = None;
        let mut kill_at: Option<Instant> = None;
        let mut exit: Option<io::Result<ExitStatus>> = None;
        let mut drain_until: Option<Instant> = None;
        let mut reading = true;
        // Each pass takes one event. The loop ends once the program has exited and its output
        // is closed, or DRAIN_AFTER_EXIT after its exit; the exit itself is certain once
        // SIGKILL is sent, and SIGKILL follows SIGTERM after `cancel_grace`.
        loop {
            if exit.is_some() && !reading {
                break;
            }
            let running = exit.is_none();
            tokio::select! {
                output = received.recv(), if reading => match output {
                    Some(output) => {
                        if let Some(error) = report.take(output, sink)
                            && stopping.is_none()
                        {
                            report.log.push(&format!("[agent] {error}; stopping the program"));
                            stopping = Some(Stop::Broken(error));
                            if running {
                                kill_at = Some(report.terminate(group, self.cancel_grace));
                            }
                        }
                    }
                    // Both readers are done: stdout and stderr are closed.
                    None => reading = false,
                },
                status = child.wait(), if running => {
                    // Whatever it started and left behind goes with it.
                    report.signal(group, Signal::SIGKILL);
                    kill_at = None;
                    drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
                    exit = Some(status);
                }
                () = cancel.cancelled(), if running && stopping.is_none() => {
                    report.log.push("[agent] task cancelled; stopping the program");
                    stopping = Some(Stop::Cancelled);
                    kill_at = Some(report.terminate(group, self.cancel_grace));
                }
                () = sleep_until(run_deadline),
                    if running && stopping.is_none() && run_deadline.is_some() =>
                {
                    let limit = self.max_run_time.unwrap_or_default();
                    report.log.push(&format!(
                        "[agent] ran past {} s; stopping the program",
                        seconds_text(limit)
                    ));
                    stopping = Some(Stop::TimedOut(limit));
                    kill_at = Some(report.terminate(group, self.cancel_grace));
                }
                () = sleep_until(kill_at), if running && kill_at.is_some() => {
                    report.log.push(&format!(
                        "[agent] still running {} s after SIGTERM; sending SIGKILL",
                        seconds_text(self.cancel_grace)
                    ));
                    report.signal(group, Signal::SIGKILL);
                    // The program itself, should the group be out of reach.
                    if let Err(error) = child.start_kill() {
                        report.log.push(&format!("[agent] cannot kill the program: {error}"));
                    }
                    kill_at = None;
                }
                () = sleep_until(drain_until), if !running && reading => {
                    report.log.push(&format!(
                        "[agent] stopped reading output {} s after the program exited: a process \
                         outside its process group still holds stdout or stderr open",
                        seconds_text(DRAIN_AFTER_EXIT)
                    ));
                    break;
                }
            }
        }
        match stopping {
            Some(Stop::Cancelled) => Outcome::Cancelled,
            Some(Stop::TimedOut(limit)) => Outcome::retryable(report.error(format!(
                "ran past {} s (max_run_seconds) and was stopped",
                seconds_text(limit)
            ))),
            Some(Stop::Broken(error)) => Outcome::fatal(format!("`{}`: {error}", self.command)),
            None => match exit {
                Some(Ok(status)) => report.ended(status),
                Some(Err(error)) => {
                    Outcome::retryable(report.error(format!("could not be waited for: {error}")))
                }
                // The loop ends only after the exit.
                None => Outcome::retryable(report.error("ended without an exit status")),
            },
        }
    }
}

/// Kills a program's process group when dropped before it is disarmed: when the run itself is
/// dropped midway (the agent stopping without waiting for it), `kill_on_drop` would reach the
/// program alone, and what it started would linger.
#[derive(Debug)]
struct GroupGuard(Option<Pid>);

impl GroupGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(group) = self.0 {
            // Nobody to tell if it fails: the run is being dropped.
            let _ = killpg(group, Signal::SIGKILL);
        }
    }
}

/// Why the agent stops a program before it ends by itself.
#[derive(Debug, Clone, PartialEq)]
enum Stop {
    /// The task was cancelled.
    Cancelled,
    /// The program ran past its `max_run_time`.
    TimedOut(Duration),
    /// The program broke the protocol (a row outside the CSV): the task fails for good.
    Broken(String),
}

/// Sleeps until `when`; forever when there is no such time (the branch is off then anyway).
async fn sleep_until(when: Option<Instant>) {
    match when {
        Some(when) => tokio::time::sleep_until(when).await,
        None => std::future::pending().await,
    }
}

/// Runs `work` until it ends or `stop` is cancelled, whichever comes first.
async fn until_stopped<T>(stop: &CancellationToken, work: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        () = stop.cancelled() => None,
        output = work => Some(output),
    }
}

/// "600" or "0.5": a duration as configured, in seconds.
fn seconds_text(duration: Duration) -> String {
    duration.as_secs_f64().to_string()
}

/// The task as the program reads it on stdin: one JSON object and a line break.
fn task_json(assignment: &Assignment, attachment: Option<&Path>) -> Vec<u8> {
    let task = json!({
        "task_id": assignment.task.task_id,
        "attempt": assignment.task.attempt,
        "system": assignment.system,
        "description": assignment.description,
        "payload": assignment.payload,
        "resume_after_row": assignment.resume_after_row,
        "attachment_path": attachment.map(|path| path.to_string_lossy()),
    });
    let mut bytes = task.to_string().into_bytes();
    bytes.push(b'\n');
    bytes
}

/// Writes the CSV to a new file only this user can read (0600), named after the task so that
/// an operator can tell whose it is; the file is removed when the returned handle is dropped.
fn write_attachment(attachment: &Attachment, assignment: &Assignment) -> io::Result<NamedTempFile> {
    let prefix = format!("botline-{}-{}-", assignment.task.task_id, assignment.task.attempt);
    let mut file = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".csv")
        .permissions(Permissions::from_mode(0o600))
        .tempfile_in(std::env::temp_dir())?;
    // A blocking write, but of a file the API already bounded in size.
    file.write_all(attachment.as_str().as_bytes())?;
    file.flush()?;
    Ok(file)
}

/// Writes the task on the program's stdin, then closes it; the error, unless the program just
/// did not read it (a closed pipe is fine: many programs only need the environment).
async fn write_task(stdin: Option<ChildStdin>, task: Vec<u8>) -> Option<String> {
    let mut stdin = stdin?;
    let written = stdin.write_all(&task).await;
    // Dropping the handle closes the pipe: the program sees the end of its input.
    drop(stdin);
    match written {
        Ok(()) => None,
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => None,
        Err(error) => Some(error.to_string()),
    }
}

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Stdout,
    Stderr,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Stdout => "stdout",
            Source::Stderr => "stderr",
        }
    }
}

/// What the readers hand the supervising loop.
#[derive(Debug, Clone, PartialEq)]
enum Output {
    /// One line (without its line break), cut to [`MAX_LINE_BYTES`] if `cut`.
    Line { source: Source, text: String, cut: bool },
    /// The stream could not be read any further.
    Failed { source: Source, error: String },
}

/// Reads `stream` line by line into `lines` until its end, a read error, or nobody listens.
async fn read_lines(
    stream: Option<impl AsyncRead + Unpin>,
    source: Source,
    lines: mpsc::Sender<Output>,
) {
    let Some(stream) = stream else { return };
    // A pipe hands over up to 64 KiB at a time: as many reads as it takes, no more.
    let mut reader = BufReader::with_capacity(MAX_LINE_BYTES, stream);
    let mut line = Vec::new();
    // Each pass reads one line, or ends: at the end of the stream, on a read error, or when
    // the supervising loop no longer listens.
    loop {
        let output = match read_line_bounded(&mut reader, &mut line, MAX_LINE_BYTES).await {
            Ok(Some(cut)) => Output::Line { source, text: line_text(&line, cut), cut },
            Ok(None) => return,
            Err(error) => Output::Failed { source, error: error.to_string() },
        };
        let failed = matches!(output, Output::Failed { .. });
        if lines.send(output).await.is_err() || failed {
            return;
        }
    }
}

/// Reads one line into `line` (cleared first; without the `\n`, nor a `\r` before it), keeping
/// at most `limit` bytes of it and skipping the rest: memory stays flat whatever the program
/// prints. `None` at the end of the stream; else whether the line was cut.
async fn read_line_bounded(
    reader: &mut (impl AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
    limit: usize,
) -> io::Result<Option<bool>> {
    line.clear();
    let mut cut = false;
    let mut read_any = false;
    // Each pass consumes at least one byte, or ends at the end of the stream or of the line.
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            break;
        }
        read_any = true;
        let (content, end_of_line) = match available.iter().position(|&byte| byte == b'\n') {
            Some(newline) => (&available[..newline], true),
            None => (available, false),
        };
        let room = limit.saturating_sub(line.len());
        if content.len() > room {
            cut = true;
        }
        line.extend_from_slice(&content[..content.len().min(room)]);
        let consumed = content.len() + usize::from(end_of_line);
        reader.consume(consumed);
        if end_of_line {
            break;
        }
    }
    if !read_any {
        return Ok(None);
    }
    if !cut && line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(cut))
}

/// A line's text: invalid UTF-8 replaced, and a character cut in two by the length limit
/// dropped rather than shown as garbage.
fn line_text(bytes: &[u8], cut: bool) -> String {
    let whole = match std::str::from_utf8(bytes) {
        Err(error) if cut && error.error_len().is_none() => &bytes[..error.valid_up_to()],
        _ => bytes,
    };
    String::from_utf8_lossy(whole).into_owned()
}

/// What a stdout line says.
#[derive(Debug, Clone, PartialEq)]
enum Line {
    /// `{"row": N, "status": "…", "message": "…"}`.
    Row(RowOutcome),
    /// `{"progress": {"done": N, "total": N}}`.
    Progress { done: u64, total: u64 },
    /// `{"log": "…"}`.
    Log(String),
    /// `{"result": …}`.
    Result(Value),
    /// A report of a known kind that cannot be read: kept as a log line, with the reason.
    Unreadable(String),
    /// Anything else: kept as a log line.
    Text,
}

/// The body of a row report.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RowReport {
    row: u32,
    status: String,
    #[serde(default)]
    message: Option<String>,
}

/// The body of a progress report.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProgressReport {
    done: u64,
    total: u64,
}

/// Reads one stdout line: pure.
fn classify(text: &str) -> Line {
    // Most lines that are not reports do not even look like JSON: no parsing for them.
    if !text.trim_start().starts_with('{') {
        return Line::Text;
    }
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(text) else {
        return Line::Text;
    };
    if object.contains_key("row") {
        return match RowReport::deserialize(Value::Object(object)) {
            Ok(report) => match row_status(&report.status) {
                Some(status) => Line::Row(RowOutcome {
                    row: report.row,
                    status,
                    message: report.message.unwrap_or_default(),
                }),
                None => Line::Unreadable(format!(
                    "unknown row status {:?}; expected CREATED, REJECTED, FAILED or DONE",
                    report.status
                )),
            },
            Err(error) => Line::Unreadable(format!("bad row report: {error}")),
        };
    }
    let mut entries = object.into_iter();
    let (Some((key, value)), None) = (entries.next(), entries.next()) else {
        return Line::Text;
    };
    match key.as_str() {
        "progress" => match ProgressReport::deserialize(value) {
            Ok(ProgressReport { done, total }) => Line::Progress { done, total },
            Err(error) => Line::Unreadable(format!("bad progress report: {error}")),
        },
        "log" => match value {
            Value::String(text) => Line::Log(text),
            _ => Line::Unreadable("bad log line: expected a string".to_owned()),
        },
        "result" => Line::Result(value),
        _ => Line::Text,
    }
}

/// A row status in any case.
fn row_status(text: &str) -> Option<RowStatus> {
    serde_json::from_value(Value::String(text.trim().to_uppercase())).ok()
}

/// The rows of one attempt: which a program may report, and which it has: pure.
#[derive(Debug, Clone, Default)]
struct RowBook {
    /// The CSV's data rows; `None` without a CSV.
    row_count: Option<u32>,
    /// Rows `1..=resume_after_row` were done by earlier attempts.
    resume_after_row: u32,
    /// The rows reported so far (at most `row_count`: others are refused).
    reported: BTreeSet<u32>,
}

/// What to do with a reported row.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RowCheck {
    /// A new row: record it.
    Record,
    /// Reported before in this attempt: the first outcome stands.
    Twice,
    /// Done by an earlier attempt, and reported then.
    DoneBefore,
    /// Not a row of the CSV: the program is broken, the task fails.
    Outside(String),
}

impl RowBook {
    /// Checks row `row` (1-based), and notes it as reported if it is new.
    fn check(&mut self, row: u32) -> RowCheck {
        let Some(count) = self.row_count else {
            return RowCheck::Outside(format!(
                "row {row} reported, but the task has no CSV attachment"
            ));
        };
        if row == 0 {
            return RowCheck::Outside("row 0 reported, but rows are numbered from 1".to_owned());
        }
        if row > count {
            let rows = if count == 1 { "row" } else { "rows" };
            return RowCheck::Outside(format!(
                "row {row} reported, but the CSV has {count} {rows}"
            ));
        }
        if row <= self.resume_after_row {
            return RowCheck::DoneBefore;
        }
        if self.reported.insert(row) { RowCheck::Record } else { RowCheck::Twice }
    }
}

/// The last `limit` bytes of a log, one entry a line, cut on a character boundary: pure. It
/// holds at most about three times `limit`, whatever is pushed.
#[derive(Debug, Clone)]
struct LogTail {
    limit: usize,
    text: String,
}

impl LogTail {
    fn new(limit: usize) -> LogTail {
        LogTail { limit, text: String::new() }
    }

    /// Adds a line.
    fn push(&mut self, line: &str) {
        let line = &line[tail_start(line, self.limit)..];
        if !self.text.is_empty() {
            self.text.push('\n');
        }
        self.text.push_str(line);
        // Trimmed once it holds twice the limit, so that each byte is moved about once.
        if self.text.len() > 2 * self.limit {
            self.text.drain(..tail_start(&self.text, self.limit));
        }
    }

    /// The last `limit` bytes.
    fn into_string(mut self) -> String {
        self.text.drain(..tail_start(&self.text, self.limit));
        self.text
    }
}

/// Where the last `max` bytes of `text` start, moved forward to a character boundary.
fn tail_start(text: &str, max: usize) -> usize {
    let mut start = text.len().saturating_sub(max);
    // At most three steps: a UTF-8 character has at most four bytes.
    while !text.is_char_boundary(start) {
        start += 1;
    }
    start
}

/// The end of `text` cut to `max` bytes on a character boundary, marked as cut.
fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// What a run has gathered: the log, the progress, the result, the rows seen.
#[derive(Debug)]
struct Report {
    command: String,
    log: LogTail,
    progress: Option<(u64, u64)>,
    result: Option<Value>,
    last_stderr: Option<String>,
    rows: RowBook,
}

impl Report {
    fn new(command: &str, assignment: &Assignment) -> Report {
        Report {
            command: command.to_owned(),
            log: LogTail::new(LOG_TAIL_BYTES),
            progress: None,
            result: None,
            last_stderr: None,
            rows: RowBook { resume_after_row: assignment.resume_after_row, ..RowBook::default() },
        }
    }

    /// Takes one line of output; the error if it breaks the protocol (the task fails).
    fn take(&mut self, output: Output, sink: &mut ProgressSink) -> Option<String> {
        let (source, text, cut) = match output {
            Output::Line { source, text, cut } => (source, text, cut),
            Output::Failed { source, error } => {
                self.log
                    .push(&format!("[agent] cannot read the program's {}: {error}", source.name()));
                return None;
            }
        };
        let text =
            if cut { format!("{text} [agent: line cut at {MAX_LINE_BYTES} bytes]") } else { text };
        if source == Source::Stderr || cut {
            if source == Source::Stderr && !text.trim().is_empty() {
                self.last_stderr = Some(shorten(text.trim(), ERROR_LINE_BYTES));
            }
            self.log.push(&text);
            return None;
        }
        match classify(&text) {
            Line::Row(row) => match self.rows.check(row.row) {
                RowCheck::Record => sink.record(row),
                RowCheck::Twice => self.log.push(&format!(
                    "[agent] row {} reported twice; the first outcome stands",
                    row.row
                )),
                RowCheck::DoneBefore => self.log.push(&format!(
                    "[agent] row {} was done by an earlier attempt (this one resumes after row \
                     {}); ignored",
                    row.row, self.rows.resume_after_row
                )),
                RowCheck::Outside(error) => return Some(error),
            },
            Line::Progress { done, total } => self.progress = Some((done, total)),
            Line::Log(line) => self.log.push(&line),
            Line::Result(result) => self.result = Some(result),
            Line::Unreadable(reason) => {
                self.log.push(&format!("{text} [agent: ignored, {reason}]"));
            }
            Line::Text => self.log.push(&text),
        }
        None
    }

    /// Sends SIGTERM to the program's group; when SIGKILL is to follow.
    fn terminate(&mut self, group: Option<Pid>, grace: Duration) -> Instant {
        self.signal(group, Signal::SIGTERM);
        Instant::now() + grace
    }

    /// Sends `signal` to the program's group. A group with nobody left in it is fine.
    fn signal(&mut self, group: Option<Pid>, signal: Signal) {
        let Some(group) = group else { return };
        match killpg(group, signal) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(error) => self.log.push(&format!(
                "[agent] cannot send {signal} to the program's process group {group}: {error}"
            )),
        }
    }

    /// The outcome of a program that ended by itself.
    fn ended(&mut self, status: ExitStatus) -> Outcome {
        match (status.code(), status.signal()) {
            (Some(0), _) => Outcome::Completed { output: self.result.take() },
            (Some(EX_TEMPFAIL), _) => Outcome::retryable(
                self.error(format!("exited with status {EX_TEMPFAIL} (EX_TEMPFAIL: try again)")),
            ),
            (Some(code), _) => Outcome::fatal(self.error(format!("exited with status {code}"))),
            (None, Some(signal)) => {
                let name = Signal::try_from(signal).map(|s| format!(" ({s})")).unwrap_or_default();
                Outcome::retryable(self.error(format!("was killed by signal {signal}{name}")))
            }
            (None, None) => Outcome::retryable(self.error(format!("ended as {status}"))),
        }
    }

    /// An error naming the command, with the last stderr line if there is one.
    fn error(&self, what: impl std::fmt::Display) -> String {
        match &self.last_stderr {
            Some(line) => format!("`{}` {what}; last stderr line: {line}", self.command),
            None => format!("`{}` {what}", self.command),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_split_into_words_as_a_shell_would() {
        let program =
            Program::from_command_line(r#"python3 -u "my bot.py" 'a b' c\ d --x="y z" # why"#)
                .expect("valid");
        assert_eq!(program.command, "python3");
        assert_eq!(program.args, ["-u", "my bot.py", "a b", "c d", "--x=y z"]);
        assert_eq!(program, Program { args: program.args.clone(), ..Program::new("python3") });
        // No shell: nothing is expanded.
        let literal = Program::from_command_line("echo $HOME *").expect("valid");
        assert_eq!(literal.args, ["$HOME", "*"]);

        assert_eq!(Program::from_command_line(""), Err(ProgramError::Empty));
        assert_eq!(Program::from_command_line("   "), Err(ProgramError::Empty));
        assert_eq!(Program::from_command_line("'' arg"), Err(ProgramError::Empty));
        let unclosed = Program::from_command_line(r#"run "unclosed"#).expect_err("bad quoting");
        assert!(unclosed.to_string().contains(r#"`run "unclosed`"#), "{unclosed}");
    }

    #[test]
    fn configuration_files_name_every_field_and_default_the_rest() {
        let full: Program = serde_json::from_value(json!({
            "command": "bots/vivo",
            "args": ["--fast"],
            "workdir": "/opt/bots",
            "env": {"A": "1"},
            "shell": false,
            "max_run_seconds": 600,
            "cancel_grace_seconds": 0.5,
        }))
        .expect("valid");
        assert_eq!(
            full,
            Program {
                command: "bots/vivo".into(),
                args: vec!["--fast".into()],
                workdir: Some(PathBuf::from("/opt/bots")),
                env: BTreeMap::from([("A".to_owned(), "1".to_owned())]),
                shell: false,
                max_run_time: Some(Duration::from_secs(600)),
                cancel_grace: Duration::from_millis(500),
            }
        );
        let minimal: Program = serde_json::from_value(json!({"command": "x"})).expect("valid");
        assert_eq!(minimal, Program::new("x"));
        assert_eq!(minimal.cancel_grace, DEFAULT_CANCEL_GRACE);

        let refused = |value: Value| {
            serde_json::from_value::<Program>(value).expect_err("refused").to_string()
        };
        assert!(refused(json!({"command": "x", "max_run_secs": 1})).contains("unknown field"));
        assert!(refused(json!({"command": "x", "max_run_seconds": 0})).contains("above 0"));
        assert!(refused(json!({"command": "x", "cancel_grace_seconds": -1})).contains("0 or more"));
        assert!(refused(json!({"args": []})).contains("missing field `command`"));
    }

    fn row(row: u32, status: RowStatus, message: &str) -> Line {
        Line::Row(RowOutcome { row, status, message: message.to_owned() })
    }

    #[test]
    fn stdout_lines_are_reports_or_log_lines() {
        assert_eq!(
            classify(r#"{"row": 3, "status": "CREATED", "message": "ok"}"#),
            row(3, RowStatus::Created, "ok")
        );
        assert_eq!(classify(r#"{"row":1,"status":"done"}"#), row(1, RowStatus::Done, ""));
        assert_eq!(
            classify(r#"  {"row":2,"status":" Rejected ","message":null}"#),
            row(2, RowStatus::Rejected, "")
        );
        assert_eq!(
            classify(r#"{"progress": {"done": 3, "total": 10}}"#),
            Line::Progress { done: 3, total: 10 }
        );
        assert_eq!(classify(r#"{"log": "hello"}"#), Line::Log("hello".into()));
        assert_eq!(classify(r#"{"result": {"a": [1]}}"#), Line::Result(json!({"a": [1]})));
        assert_eq!(classify(r#"{"result": null}"#), Line::Result(Value::Null));

        for text in ["", "plain text", "[1,2]", "{not json", "{}", r#"{"other": 1}"#, "42"] {
            assert_eq!(classify(text), Line::Text, "{text:?}");
        }
        // A report and something else in one object is not a report.
        assert_eq!(classify(r#"{"log": "a", "result": 1}"#), Line::Text);

        let unreadable = |text: &str| match classify(text) {
            Line::Unreadable(reason) => reason,
            other => panic!("{text}: {other:?}"),
        };
        assert!(unreadable(r#"{"row":1,"status":"OK"}"#).contains("unknown row status \"OK\""));
        assert!(unreadable(r#"{"row":"1","status":"DONE"}"#).starts_with("bad row report"));
        assert!(unreadable(r#"{"row":-1,"status":"DONE"}"#).starts_with("bad row report"));
        assert!(unreadable(r#"{"row":1}"#).contains("missing field `status`"));
        assert!(unreadable(r#"{"row":1,"status":"DONE","extra":1}"#).contains("unknown field"));
        assert!(unreadable(r#"{"progress": {"done": 1}}"#).starts_with("bad progress report"));
        assert!(unreadable(r#"{"log": 3}"#).contains("expected a string"));
    }

    #[test]
    fn rows_must_be_in_the_csv_after_the_resume_point_and_new() {
        let mut book = RowBook { row_count: Some(5), resume_after_row: 2, ..RowBook::default() };
        assert_eq!(book.check(4), RowCheck::Record);
        assert_eq!(book.check(3), RowCheck::Record, "out of order is fine");
        assert_eq!(book.check(4), RowCheck::Twice);
        assert_eq!(book.check(2), RowCheck::DoneBefore);
        assert_eq!(book.check(1), RowCheck::DoneBefore);
        assert_eq!(book.check(5), RowCheck::Record);
        assert_eq!(
            book.check(6),
            RowCheck::Outside("row 6 reported, but the CSV has 5 rows".to_owned())
        );
        assert_eq!(
            book.check(0),
            RowCheck::Outside("row 0 reported, but rows are numbered from 1".to_owned())
        );
        let mut one = RowBook { row_count: Some(1), ..RowBook::default() };
        assert_eq!(
            one.check(u32::MAX),
            RowCheck::Outside(format!("row {} reported, but the CSV has 1 row", u32::MAX))
        );
        let mut none = RowBook::default();
        assert_eq!(
            none.check(1),
            RowCheck::Outside("row 1 reported, but the task has no CSV attachment".to_owned())
        );
    }

    #[test]
    fn the_log_keeps_its_last_bytes_in_order_cut_on_a_character() {
        let mut log = LogTail::new(10);
        log.push("one");
        log.push("two");
        assert_eq!(log.clone().into_string(), "one\ntwo");
        log.push("three");
        // "one\ntwo\nthree" is 13 bytes: the last 10.
        assert_eq!(log.clone().into_string(), "\ntwo\nthree");

        // "é" is two bytes: a cut through one moves to the next character.
        let mut accents = LogTail::new(5);
        accents.push("éééé");
        assert_eq!(accents.into_string(), "éé");

        let mut flood = LogTail::new(100);
        for index in 0..10_000 {
            flood.push(&format!("line {index}"));
            assert!(flood.text.len() <= 3 * 100, "held {} bytes", flood.text.len());
        }
        let tail = flood.into_string();
        assert!(tail.len() <= 100);
        assert!(tail.ends_with("line 9998\nline 9999"), "{tail}");

        let mut huge = LogTail::new(8);
        huge.push(&"ab".repeat(1000));
        assert_eq!(huge.into_string(), "abababab");
        assert_eq!(LogTail::new(8).into_string(), "");
    }

    #[tokio::test]
    async fn lines_are_read_with_a_bound_and_what_is_past_it_skipped() {
        let input: &[u8] = b"short\r\nexactly8\n0123456789abc\n\nlast without newline";
        let mut reader = BufReader::with_capacity(4, input);
        let mut line = Vec::new();
        let mut lines = Vec::new();
        while let Some(cut) = read_line_bounded(&mut reader, &mut line, 8).await.expect("read") {
            lines.push((String::from_utf8(line.clone()).expect("utf-8"), cut));
        }
        assert_eq!(
            lines,
            [
                ("short".to_owned(), false),
                ("exactly8".to_owned(), false),
                ("01234567".to_owned(), true),
                (String::new(), false),
                ("last wit".to_owned(), true),
            ]
        );
        let mut empty: &[u8] = b"";
        assert_eq!(read_line_bounded(&mut empty, &mut line, 8).await.expect("read"), None);
    }

    #[test]
    fn a_cut_line_loses_a_split_character_and_bad_bytes_are_replaced() {
        let text = "aé".as_bytes();
        assert_eq!(line_text(&text[..2], true), "a");
        assert_eq!(line_text(&text[..2], false), "a\u{fffd}");
        assert_eq!(line_text(b"a\xffb", true), "a\u{fffd}b");
        assert_eq!(shorten("abc", 3), "abc");
        assert_eq!(shorten("aéb", 2), "a…");
    }

    #[test]
    fn checking_names_the_command_and_what_is_wrong() {
        let dir = tempfile::TempDir::new().expect("temporary directory");
        let script = dir.path().join("bot.sh");
        std::fs::write(&script, "#!/bin/sh\n").expect("write");
        let path = script.to_str().expect("utf-8").to_owned();

        let not_executable = Program::new(&path).check().expect_err("no x bit");
        assert!(matches!(not_executable, ProgramError::NotExecutable { .. }));
        assert!(not_executable.to_string().contains(&path), "{not_executable}");

        std::fs::set_permissions(&script, Permissions::from_mode(0o700)).expect("chmod");
        assert_eq!(Program::new(&path).check(), Ok(()));

        let missing = format!("{path}.gone");
        let error = Program::new(&missing).check().expect_err("missing");
        assert!(matches!(error, ProgramError::Unreachable { .. }));
        assert!(error.to_string().contains(&missing), "{error}");

        let directory = Program::new(dir.path().to_str().expect("utf-8")).check();
        assert!(matches!(directory, Err(ProgramError::NotExecutable { .. })));

        // Bare names are looked up on the PATH the program would get.
        let on_path = Program {
            env: BTreeMap::from([(
                "PATH".to_owned(),
                format!("relative:{}", dir.path().display()),
            )]),
            ..Program::new("bot.sh")
        };
        assert_eq!(on_path.executable(), Ok(script.clone()));
        let elsewhere = Program {
            env: BTreeMap::from([("PATH".to_owned(), "/nonexistent".to_owned())]),
            ..Program::new("bot.sh")
        };
        assert_eq!(
            elsewhere.check().expect_err("not there").to_string(),
            "automation command `bot.sh` not found on PATH (/nonexistent)"
        );

        let workdir = Program { workdir: Some(dir.path().join("nowhere")), ..Program::new(&path) };
        let error = workdir.check().expect_err("no such directory");
        assert!(error.to_string().contains("nowhere"), "{error}");
        assert!(error.to_string().contains(&path), "{error}");

        // With `shell`, the command is a script: `sh` is what must exist.
        let shell = Program { shell: true, ..Program::new("exit 0") };
        assert_eq!(shell.check(), Ok(()));
    }
}
