//! The program automation with real programs: small `sh` and `python3` scripts written to a
//! temporary directory of each test, run through `Program::run`, with the rows they report
//! read back from the sink's channel. No broker, no orchestrator.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bot_agent::ProgressSink;
use bot_agent::automations::Outcome;
use bot_agent::automations::program::{LOG_TAIL_BYTES, Program, Ran};
use broker_config::{Assignment, Attachment, RowOutcome, RowStatus, System, TaskRef};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

/// Three data rows.
const CSV: &str =
    "name,email\nAna,ana@example.com\nBruno,bruno@example.com\nCaio,caio@example.com\n";

/// The longest any of these runs may take: only to prove that nothing hangs (the programs that
/// could hang sleep for 300 s), with room for a slow machine.
const NO_HANG: Duration = Duration::from_secs(20);

/// Writes an executable script into `dir`.
fn script(dir: &TempDir, name: &str, body: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A program running `path`, stopped quickly when it has to be.
fn program(path: &Path) -> Program {
    Program { cancel_grace: Duration::from_millis(200), ..Program::new(path.to_str().unwrap()) }
}

fn assignment(csv: Option<&str>, resume_after_row: u32) -> Assignment {
    Assignment {
        task: TaskRef { task_id: uuid::Uuid::new_v4(), attempt: 2 },
        system: System::NOOP,
        description: "program test".into(),
        attachment: csv
            .map(|csv| Attachment::parse(csv.to_owned(), &System::NOOP, &[]).unwrap().to_base64()),
        payload: Some(json!({"greeting": "olá"})),
        resume_after_row,
        offer_expires_at: chrono::Utc::now(),
    }
}

/// Runs `program` for `task` to the end; what it gave, the rows recorded, and how long it took.
async fn run(
    program: &Program,
    task: &Assignment,
    cancel: &CancellationToken,
) -> (Ran, Vec<RowOutcome>, Duration) {
    let (mut sink, mut rows) = ProgressSink::channel();
    let started = Instant::now();
    let ran = program.run(task, &mut sink, cancel).await;
    let took = started.elapsed();
    drop(sink);
    let mut recorded = Vec::new();
    while let Some(row) = rows.recv().await {
        recorded.push(row);
    }
    assert!(took < NO_HANG, "the run took {took:?}: {ran:?}");
    (ran, recorded, took)
}

/// The pid written to `file` by a program, waited for up to 10 s.
async fn pid_in(file: &Path) -> i32 {
    for _ in 0..200 {
        if let Ok(text) = std::fs::read_to_string(file)
            && let Ok(pid) = text.trim().parse()
        {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no pid in {}", file.display());
}

/// Whether process `pid` is alive: it exists and is not a zombie waiting to be reaped (an
/// orphan is reaped by whoever is process 1 here, which may take its time).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rsplit_once(')').is_none_or(|(_, rest)| !rest.trim_start().starts_with('Z'))
        }
        Err(_) => false,
    }
}

/// Waits up to 10 s for process `pid` to be gone.
async fn assert_gone(pid: i32) {
    for _ in 0..200 {
        if !alive(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("process {pid} is still alive");
}

fn failure(outcome: &Outcome) -> (&str, bool) {
    match outcome {
        Outcome::Failed { error, retryable } => (error.as_str(), *retryable),
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// Reads the task from stdin and the CSV from its file, reports the rows after the resume
/// point, progress and a log line, and outputs what it saw.
const PYTHON_ROWS: &str = r#"#!/usr/bin/env python3
import json, os, sys
task = json.load(sys.stdin)
path = os.environ["BOTLINE_ATTACHMENT"]
with open(path) as f:
    rows = f.read().splitlines()[1:]
resume = int(os.environ["BOTLINE_RESUME_AFTER_ROW"])
for number, row in enumerate(rows, start=1):
    if number <= resume:
        continue
    status = "created" if number % 2 else "Rejected"
    print(json.dumps({"row": number, "status": status, "message": row.split(",")[0]}), flush=True)
    print(json.dumps({"progress": {"done": number, "total": len(rows)}}), flush=True)
print(json.dumps({"log": "read " + path}))
print("stderr says hi", file=sys.stderr)
env = {name: os.environ.get(name) for name in
       ["BOTLINE_TASK_ID", "BOTLINE_ATTEMPT", "BOTLINE_SYSTEM", "BOTLINE_RESUME_AFTER_ROW",
        "BOTLINE_ATTACHMENT", "GREETING"]}
print(json.dumps({"result": {"task": task, "env": env, "cwd": os.getcwd(),
                             "mode": os.stat(path).st_mode & 0o777}}))
"#;

#[tokio::test]
async fn a_python_program_reads_the_task_and_the_csv_and_reports_rows_and_a_result() {
    let dir = TempDir::new().unwrap();
    let path = script(&dir, "rows.py", PYTHON_ROWS);
    let mut program = program(&path);
    program.env.insert("GREETING".into(), "bom dia".into());
    program.workdir = Some(dir.path().to_owned());
    let task = assignment(Some(CSV), 0);
    let (ran, rows, _) = run(&program, &task, &CancellationToken::new()).await;

    let Outcome::Completed { output: Some(output) } = &ran.outcome else {
        panic!("expected an output: {ran:?}")
    };
    assert_eq!(
        rows,
        [
            RowOutcome { row: 1, status: RowStatus::Created, message: "Ana".into() },
            RowOutcome { row: 2, status: RowStatus::Rejected, message: "Bruno".into() },
            RowOutcome { row: 3, status: RowStatus::Created, message: "Caio".into() },
        ]
    );
    assert_eq!(ran.progress, Some((3, 3)));
    let attachment = output["env"]["BOTLINE_ATTACHMENT"].as_str().unwrap();
    let id = task.task.task_id.to_string();
    assert_eq!(
        output["env"],
        json!({
            "BOTLINE_TASK_ID": id,
            "BOTLINE_ATTEMPT": "2",
            "BOTLINE_SYSTEM": "NOOP",
            "BOTLINE_RESUME_AFTER_ROW": "0",
            "BOTLINE_ATTACHMENT": attachment,
            "GREETING": "bom dia",
        })
    );
    assert_eq!(
        output["task"],
        json!({
            "task_id": id,
            "attempt": 2,
            "system": "NOOP",
            "description": "program test",
            "payload": {"greeting": "olá"},
            "resume_after_row": 0,
            "attachment_path": attachment,
        })
    );
    assert_eq!(output["mode"], 0o600);
    assert_eq!(Path::new(output["cwd"].as_str().unwrap()), dir.path().canonicalize().unwrap());
    assert!(attachment.contains(&id), "the file is named after the task: {attachment}");
    assert!(!Path::new(attachment).exists(), "the attachment file is removed after the run");
    assert!(ran.log.contains(&format!("read {attachment}")), "{}", ran.log);
    assert!(ran.log.contains("stderr says hi"), "{}", ran.log);
}

#[tokio::test]
async fn a_resumed_attempt_is_told_where_to_resume_and_earlier_rows_are_not_recorded_again() {
    let dir = TempDir::new().unwrap();
    let resumes = script(&dir, "rows.py", PYTHON_ROWS);
    let (ran, rows, _) =
        run(&program(&resumes), &assignment(Some(CSV), 2), &CancellationToken::new()).await;
    assert!(matches!(ran.outcome, Outcome::Completed { output: Some(_) }), "{ran:?}");
    assert_eq!(rows, [RowOutcome { row: 3, status: RowStatus::Created, message: "Caio".into() }]);

    // A program that ignores the resume point: rows 1 and 2 were reported by the earlier
    // attempt, so they are not recorded again.
    let ignores = script(
        &dir,
        "all.sh",
        r#"#!/bin/sh
for row in 1 2 3; do echo "{\"row\": $row, \"status\": \"DONE\"}"; done
"#,
    );
    let (ran, rows, _) =
        run(&program(&ignores), &assignment(Some(CSV), 2), &CancellationToken::new()).await;
    assert_eq!(ran.outcome, Outcome::Completed { output: None });
    assert_eq!(rows, [RowOutcome { row: 3, status: RowStatus::Done, message: String::new() }]);
    assert!(ran.log.contains("row 1 was done by an earlier attempt"), "{}", ran.log);
}

#[tokio::test]
async fn exit_statuses_decide_between_done_retry_and_fatal() {
    let dir = TempDir::new().unwrap();
    let cancel = CancellationToken::new();

    let tempfail = script(&dir, "tempfail.sh", "#!/bin/sh\necho 'portal is down' >&2\nexit 75\n");
    let (ran, _, _) = run(&program(&tempfail), &assignment(None, 0), &cancel).await;
    let (error, retryable) = failure(&ran.outcome);
    assert!(retryable, "{error}");
    assert!(error.contains("exited with status 75"), "{error}");
    assert!(error.contains("portal is down"), "{error}");

    let fatal = script(
        &dir,
        "fatal.sh",
        "#!/bin/sh\necho 'first complaint' >&2\necho 'bad credentials' >&2\necho '' >&2\nexit 3\n",
    );
    let (ran, _, _) = run(&program(&fatal), &assignment(None, 0), &cancel).await;
    let (error, retryable) = failure(&ran.outcome);
    assert!(!retryable, "{error}");
    assert!(error.contains(fatal.to_str().unwrap()), "the error names the command: {error}");
    assert!(error.contains("exited with status 3"), "{error}");
    assert!(error.ends_with("last stderr line: bad credentials"), "{error}");
    assert!(ran.log.contains("first complaint\nbad credentials"), "{}", ran.log);

    let garbage = script(
        &dir,
        "garbage.sh",
        "#!/bin/sh\necho 'plain words'\necho '{\"unknown\": 1}'\necho '{\"row\": \"two\"}'\n\
         echo '[1, 2]'\nprintf 'no line break at the end'\n",
    );
    let (ran, rows, _) = run(&program(&garbage), &assignment(Some(CSV), 0), &cancel).await;
    assert_eq!(ran.outcome, Outcome::Completed { output: None });
    assert!(rows.is_empty());
    for line in ["plain words", "{\"unknown\": 1}", "{\"row\": \"two\"}", "[1, 2]", "no line break"]
    {
        assert!(ran.log.contains(line), "{line:?} not in {}", ran.log);
    }

    let signalled = script(&dir, "signalled.sh", "#!/bin/sh\nkill -KILL $$\n");
    let (ran, _, _) = run(&program(&signalled), &assignment(None, 0), &cancel).await;
    let (error, retryable) = failure(&ran.outcome);
    assert!(retryable, "{error}");
    assert!(error.contains("killed by signal 9 (SIGKILL)"), "{error}");
}

#[tokio::test]
async fn a_row_past_the_csv_fails_the_task_for_good_and_stops_the_program() {
    let dir = TempDir::new().unwrap();
    let path = script(
        &dir,
        "past.sh",
        "#!/bin/sh\necho '{\"row\": 1, \"status\": \"done\"}'\n\
         echo '{\"row\": 5, \"status\": \"done\"}'\nsleep 30\n",
    );
    let (ran, rows, _) =
        run(&program(&path), &assignment(Some(CSV), 0), &CancellationToken::new()).await;
    let (error, retryable) = failure(&ran.outcome);
    assert!(!retryable, "{error}");
    assert!(error.contains("row 5 reported, but the CSV has 3 rows"), "{error}");
    assert_eq!(rows.len(), 1, "the rows before stand: {rows:?}");

    // Without a CSV there are no rows to report.
    let (ran, _, _) = run(&program(&path), &assignment(None, 0), &CancellationToken::new()).await;
    let (error, _) = failure(&ran.outcome);
    assert!(error.contains("no CSV attachment"), "{error}");
}

#[tokio::test]
async fn a_row_reported_twice_keeps_its_first_outcome() {
    let dir = TempDir::new().unwrap();
    let path = script(
        &dir,
        "twice.sh",
        "#!/bin/sh\necho '{\"row\": 2, \"status\": \"created\", \"message\": \"first\"}'\n\
         echo '{\"row\": 1, \"status\": \"failed\"}'\n\
         echo '{\"row\": 2, \"status\": \"failed\", \"message\": \"second\"}'\n",
    );
    let (ran, rows, _) =
        run(&program(&path), &assignment(Some(CSV), 0), &CancellationToken::new()).await;
    assert_eq!(ran.outcome, Outcome::Completed { output: None });
    assert_eq!(
        rows,
        [
            RowOutcome { row: 2, status: RowStatus::Created, message: "first".into() },
            RowOutcome { row: 1, status: RowStatus::Failed, message: String::new() },
        ]
    );
    assert!(ran.log.contains("row 2 reported twice; the first outcome stands"), "{}", ran.log);
}

#[tokio::test]
async fn a_program_running_past_its_time_is_stopped_and_may_be_retried() {
    let dir = TempDir::new().unwrap();
    let sleeps = script(&dir, "sleeps.sh", "#!/bin/sh\necho '{\"log\": \"sleeping\"}'\nsleep 30\n");
    let sleeper = Program { max_run_time: Some(Duration::from_millis(500)), ..program(&sleeps) };
    let (ran, _, _) = run(&sleeper, &assignment(None, 0), &CancellationToken::new()).await;
    let (error, retryable) = failure(&ran.outcome);
    assert!(retryable, "{error}");
    assert!(error.contains("ran past 0.5 s"), "{error}");
}

#[tokio::test]
async fn a_program_that_ignores_sigterm_gets_sigkill_after_the_grace() {
    let dir = TempDir::new().unwrap();
    let ready = dir.path().join("ready");
    // It ignores SIGTERM, and so does the `sleep` it starts; it says when it does.
    let path = script(
        &dir,
        "stubborn.sh",
        &format!("#!/bin/sh\ntrap '' TERM\ntouch {}\nsleep 30\n", ready.display()),
    );
    let (stubborn, task, cancel) = (program(&path), assignment(None, 0), CancellationToken::new());
    let cancelling = async {
        for _ in 0..200 {
            if ready.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ready.exists(), "the program never got ready");
        cancel.cancel();
    };
    let ((ran, _, _), ()) = tokio::join!(run(&stubborn, &task, &cancel), cancelling);
    assert_eq!(ran.outcome, Outcome::Cancelled);
    assert!(ran.log.contains("still running 0.2 s after SIGTERM; sending SIGKILL"), "{}", ran.log);
}

#[tokio::test]
async fn cancelling_stops_the_program_and_what_it_started() {
    let dir = TempDir::new().unwrap();
    let pid_file = dir.path().join("child.pid");
    let path = script(
        &dir,
        "waits.sh",
        &format!("#!/bin/sh\nsleep 300 &\necho $! > {}\nwait\n", pid_file.display()),
    );
    let cancel = CancellationToken::new();
    let cancelling = async {
        let pid = pid_in(&pid_file).await;
        assert!(alive(pid));
        cancel.cancel();
        pid
    };
    let (waits, task) = (program(&path), assignment(None, 0));
    let ((ran, _, _), child) = tokio::join!(run(&waits, &task, &cancel), cancelling);
    assert_eq!(ran.outcome, Outcome::Cancelled);
    assert!(ran.log.contains("task cancelled"), "{}", ran.log);
    assert_gone(child).await;
}

#[tokio::test]
async fn a_run_dropped_midway_takes_the_whole_process_group_with_it() {
    let dir = TempDir::new().unwrap();
    let pid_file = dir.path().join("child.pid");
    let path = script(
        &dir,
        "waits.sh",
        &format!("#!/bin/sh\nsleep 300 &\necho $! > {}\nwait\n", pid_file.display()),
    );
    let (waits, task, cancel) = (program(&path), assignment(None, 0), CancellationToken::new());
    let (mut sink, _rows) = ProgressSink::channel();
    let running = waits.run(&task, &mut sink, &cancel);
    // The run is dropped once the child is there, as an agent that stops without waiting would.
    let child = tokio::select! {
        ran = running => panic!("the program ended by itself: {ran:?}"),
        pid = pid_in(&pid_file) => pid,
    };
    assert_gone(child).await;
}

#[tokio::test]
async fn a_child_left_holding_stdout_does_not_keep_the_task_running() {
    let dir = TempDir::new().unwrap();
    let pid_file = dir.path().join("child.pid");
    let path = script(
        &dir,
        "leaves.sh",
        &format!(
            "#!/bin/sh\nsleep 300 &\necho $! > {}\necho '{{\"result\": {{\"ok\": true}}}}'\n",
            pid_file.display()
        ),
    );
    let (ran, _, _) = run(&program(&path), &assignment(None, 0), &CancellationToken::new()).await;
    assert_eq!(ran.outcome, Outcome::Completed { output: Some(json!({"ok": true})) });
    // Its output closed when its group was killed: no waiting for the drain period.
    assert!(!ran.log.contains("stopped reading output"), "{}", ran.log);
    assert_gone(pid_in(&pid_file).await).await;
}

#[tokio::test]
async fn a_process_that_left_the_group_is_not_waited_for_past_the_drain_period() {
    let dir = TempDir::new().unwrap();
    let pid_file = dir.path().join("escaped.pid");
    // `setsid` puts the sleep in a session (and group) of its own, out of the agent's reach,
    // with the program's stdout still open. The program waits until it has left (it writes its
    // pid once out): exiting before would have it killed with the group.
    let path = script(
        &dir,
        "escapes.sh",
        &format!(
            "#!/bin/sh\nsetsid sh -c 'echo $$ > {pid}; exec sleep 300' &\n\
             tries=0\nwhile [ ! -s {pid} ] && [ $tries -lt 100 ]; do\n\
             sleep 0.05; tries=$((tries + 1)); done\n\
             echo done\n",
            pid = pid_file.display()
        ),
    );
    let (ran, _, took) =
        run(&program(&path), &assignment(None, 0), &CancellationToken::new()).await;
    let escaped = pid_in(&pid_file).await;
    // The test started it, through the program: it ends it.
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(escaped), nix::sys::signal::SIGKILL);
    assert_eq!(ran.outcome, Outcome::Completed { output: None });
    assert!(ran.log.contains("stopped reading output 1 s after the program exited"), "{}", ran.log);
    assert!(took >= Duration::from_millis(900), "the drain period was cut short: {took:?}");
}

/// The peak resident memory of this process, in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn a_flood_of_output_keeps_the_log_and_memory_bounded() {
    let dir = TempDir::new().unwrap();
    // 200 MB of 1000-byte lines, then 10 MB without a line break, then a result.
    let path = script(
        &dir,
        "floods.sh",
        "#!/bin/sh\nyes \"$(printf '%0999d' 0)\" | head -c 200000000\n\
         head -c 10000000 /dev/zero | tr '\\0' x\necho\n\
         echo '{\"result\": \"survived\"}'\n",
    );
    let before = peak_rss_kib();
    let (ran, _, _) = run(&program(&path), &assignment(None, 0), &CancellationToken::new()).await;
    assert_eq!(ran.outcome, Outcome::Completed { output: Some(Value::from("survived")) });
    assert!(ran.log.len() <= LOG_TAIL_BYTES, "{} bytes of log", ran.log.len());
    assert!(ran.log.contains("[agent: line cut at 65536 bytes]"), "the long line is cut");
    if let (Some(before), Some(after)) = (before, peak_rss_kib()) {
        // It grew by about 0.5 MiB when measured; the margin is for the other tests running in
        // this process at the same time. Holding the output would take 200 MB.
        assert!(after < before + 64 * 1024, "peak memory went from {before} KiB to {after} KiB");
    }
}

#[tokio::test]
async fn a_program_that_does_not_read_its_stdin_still_completes() {
    let dir = TempDir::new().unwrap();
    let path = script(&dir, "deaf.sh", "#!/bin/sh\nexec 0<&-\necho '{\"result\": 1}'\n");
    let mut task = assignment(None, 0);
    // Far more than a pipe holds: writing it would block if the agent waited for a reader.
    task.payload = Some(json!({"big": "x".repeat(4 * 1024 * 1024)}));
    let (ran, _, _) = run(&program(&path), &task, &CancellationToken::new()).await;
    assert_eq!(ran.outcome, Outcome::Completed { output: Some(json!(1)) });
}

#[tokio::test]
async fn a_shell_command_runs_through_sh_with_its_arguments() {
    let program = Program {
        shell: true,
        args: vec!["42".into()],
        ..Program::new(r#"echo "{\"result\": $1}" | cat"#)
    };
    program.check().unwrap();
    let (ran, _, _) = run(&program, &assignment(None, 0), &CancellationToken::new()).await;
    assert_eq!(ran.outcome, Outcome::Completed { output: Some(json!(42)) });
}

#[tokio::test]
async fn a_command_that_does_not_exist_is_refused_by_name() {
    let missing = Program::from_command_line("botline-no-such-program --flag").unwrap();
    let error = missing.check().unwrap_err().to_string();
    assert!(error.contains("`botline-no-such-program` not found on PATH"), "{error}");
    let (ran, _, _) = run(&missing, &assignment(None, 0), &CancellationToken::new()).await;
    let (error, retryable) = failure(&ran.outcome);
    assert!(!retryable && error.contains("botline-no-such-program"), "{error}");

    // One that looks executable but cannot be started: its interpreter does not exist.
    let dir = TempDir::new().unwrap();
    let path = script(&dir, "orphan.sh", "#!/no/such/interpreter\n");
    let orphan = program(&path);
    orphan.check().unwrap();
    let (ran, _, _) = run(&orphan, &assignment(None, 0), &CancellationToken::new()).await;
    let (error, retryable) = failure(&ran.outcome);
    assert!(!retryable, "{error}");
    // Started through setpriv (where there is one), the exec fails in setpriv, which says so.
    assert!(error.contains(&path.display().to_string()), "{error}");
    assert!(error.contains("No such file or directory"), "{error}");
}
