//! The one-shot commands, run as a user would: the real binary in a child process.

use std::process::{Command, Stdio};

fn runql() -> Command {
    Command::new(env!("CARGO_BIN_EXE_runql"))
}

#[test]
fn placeholder_runs() {
    let out = runql().arg("--version").stdout(Stdio::piped()).output().unwrap();
    assert!(out.status.success());
}
