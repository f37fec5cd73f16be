//! `stop_on_signals` in a real process: this test binary runs itself again as a child that
//! never finishes its graceful stop, and sends it SIGTERM twice with `kill`.
#![cfg(unix)]
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use broker_config::signal::{FORCED_EXIT_CODE, stop_on_signals};
use tokio_util::sync::CancellationToken;

/// Set in the child's environment: the child test does nothing without it.
const CHILD: &str = "BOTLINE_TEST_SIGNAL_CHILD";
/// What the child says a forced stop leaves behind.
const HAND_BACK: &str = "the child's work goes back to nobody";
/// How long the child may take to answer each step before the test gives up on it (a bound on
/// the wait, not a timing that is checked).
const PATIENCE: Duration = Duration::from_secs(60);

/// The child: installs the handlers, says it is ready, and after the first signal keeps
/// "finishing" forever, so only a forced stop ends it.
#[tokio::test]
#[ignore = "run by a_second_sigterm_stops_the_process_at_once, in a process of its own"]
async fn signalled_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(false).init();
    let shutdown = CancellationToken::new();
    stop_on_signals(shutdown.clone(), HAND_BACK);
    eprintln!("child ready");
    shutdown.cancelled().await;
    eprintln!("child draining");
    std::future::pending::<()>().await;
}

/// The child's standard error, line by line.
struct Log {
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Log {
    fn of(child: &mut Child) -> Log {
        let stderr = child.stderr.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Log { lines, seen: Vec::new() }
    }

    /// Waits for a line containing `text` and returns it; fails with the log so far when the
    /// child ends or stays silent for [`PATIENCE`].
    fn wait_for(&mut self, text: &str, child: &mut Child) -> String {
        loop {
            match self.lines.recv_timeout(PATIENCE) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(why) => {
                    let _ = child.kill();
                    panic!(
                        "no line with {text:?} ({why}); the child said:\n{}",
                        self.seen.join("\n")
                    );
                }
            }
        }
    }
}

fn sigterm(child: &Child) {
    let sent = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(sent.success(), "kill -TERM {}: {sent}", child.id());
}

#[test]
fn a_second_sigterm_stops_the_process_at_once() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["signalled_child", "--exact", "--ignored", "--nocapture", "--test-threads", "1"])
        .env(CHILD, "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = Log::of(&mut child);
    log.wait_for("child ready", &mut child);

    sigterm(&child);
    let first = log.wait_for("stop requested", &mut child);
    assert!(first.contains("SIGTERM"), "{first}");
    log.wait_for("child draining", &mut child);
    assert!(child.try_wait().unwrap().is_none(), "one signal only asks for a graceful stop");

    sigterm(&child);
    let forced = log.wait_for("second signal", &mut child);
    assert!(forced.contains(HAND_BACK), "the forced stop says what it hands back: {forced}");
    assert!(forced.contains(&format!("exit code {FORCED_EXIT_CODE}")), "{forced}");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(FORCED_EXIT_CODE), "{status}");
}
