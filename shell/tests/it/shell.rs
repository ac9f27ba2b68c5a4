//! The interactive shell, driven in a pseudo-terminal like a user at a keyboard.

use std::time::Duration;

use crate::cli::demo_store;

#[test]
fn the_shell_completes_runs_multiline_queries_cancels_and_quits() {
    let dir = demo_store();
    let history = dir.path().join("history");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_runql"));
    cmd.args(["--store", &dir.path().to_string_lossy()])
        .env("RUNQL_HISTORY", &history)
        .env("COLUMNS", "120")
        .env("TERM", "xterm");
    let mut p = rexpect::session::spawn_command(cmd, Some(20_000)).unwrap();
    p.exp_string("runql>").unwrap();

    // A multi-line statement: the prompt changes until the `;`.
    p.send_line("SELECT count(*) AS n").unwrap();
    p.exp_string("...>").unwrap();
    p.send_line("FROM runs WHERE project = 'rl-cartpole';")
        .unwrap();
    p.exp_string("(1 row)").unwrap();

    // Completion of a table name and of a project name inside quotes.
    p.send("SELECT count(*) FROM metric_su").unwrap();
    p.send("\t").unwrap();
    p.send(" WHERE project = 'rl-c").unwrap();
    p.send("\t").unwrap();
    p.send_line("';").unwrap();
    p.exp_string("(1 row)").unwrap();

    // Expanded display.
    p.send_line("\\x on").unwrap();
    p.exp_string("expanded display is on").unwrap();
    p.send_line("SELECT 'a' AS first, 2 AS second;").unwrap();
    p.exp_string("-[ RECORD 1 ]").unwrap();
    p.send_line("\\x off").unwrap();
    p.exp_string("expanded display is off").unwrap();

    // Ctrl-C cancels a running query, not the shell.
    p.send_line(
        "SELECT count(*) FROM metrics a, metrics b, metrics c WHERE a.value + b.value > c.value;",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    p.send_control('c').unwrap();
    p.exp_string("cancelled").unwrap();
    p.send_line("SELECT 40 + 2 AS answer;").unwrap();
    p.exp_string("42").unwrap();

    p.send_line("\\q").unwrap();
    p.exp_eof().unwrap();
    let saved = std::fs::read_to_string(&history).unwrap();
    assert!(saved.contains("SELECT 40 + 2 AS answer;"), "{saved}");
}
