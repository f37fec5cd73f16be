//! `orchestrator demo` moved to its own program (`botline-demo`); the old command says where, in
//! one line, and fails with status 2 instead of vanishing or starting anything.

use std::process::Command;

#[test]
fn orchestrator_demo_names_the_new_command_and_exits_with_2() {
    let output = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("demo")
        // Nothing may start: a database or broker it tried would show up in the log.
        .env("BOTLINE_DATABASE_URL", "sqlite:///nonexistent/dir/never.db")
        .env("BOTLINE_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .env("RUST_LOG", "info")
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("botline-demo"), "{stderr}");
    assert!(stderr.contains("cargo run -p botline-demo"), "{stderr}");
    assert!(output.stdout.is_empty(), "{output:?}");
}
