//! `runql run -- CMD`: real child processes that succeed, fail, and are killed.

use std::process::Output;

use crate::cli::{csv, runql};

fn wrap(store: &std::path::Path, script: &str, args: &[&str]) -> Output {
    runql()
        .args([
            "--store",
            &store.to_string_lossy(),
            "run",
            "-p",
            "wrapped",
            "--",
        ])
        .args(["sh", "-c", script, "train.sh"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_wrapped_command_becomes_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"echo "training with $*"
for i in 1 2 3; do echo "@runql metric loss=0.$i step=$i"; done
echo "@runql tag note=first try"
echo "@runql bogus"
echo "a warning" >&2"#;
    let out = wrap(dir.path(), script, &["--lr", "0.1", "--fp16"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("training with --lr 0.1 --fp16"), "{stdout}");
    assert!(
        !stdout.contains("@runql"),
        "protocol lines are not shown: {stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown @runql verb"));

    assert_eq!(
        csv(dir.path(), "SELECT status FROM runs"),
        "status\nfinished\n"
    );
    assert_eq!(
        csv(dir.path(), "SELECT key, value FROM params ORDER BY key"),
        "key,value\nfp16,true\nlr,0.1\n"
    );
    assert_eq!(
        csv(
            dir.path(),
            "SELECT step, value FROM metrics WHERE key = 'loss' ORDER BY step"
        ),
        "step,value\n1,0.1\n2,0.2\n3,0.3\n"
    );
    assert_eq!(
        csv(dir.path(), "SELECT stream, line FROM logs ORDER BY stream"),
        "stream,line\nstderr,a warning\nstdout,training with --lr 0.1 --fp16\n"
    );
    assert_eq!(
        csv(dir.path(), "SELECT value FROM tags WHERE key = 'note'"),
        "value\nfirst try\n"
    );
    assert!(csv(dir.path(), "SELECT command FROM runs").contains("--lr 0.1 --fp16"));
}

#[test]
fn a_failing_command_is_a_failed_run_with_its_stderr_and_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let out = wrap(dir.path(), "echo 'Traceback: boom' >&2; exit 3", &[]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        csv(dir.path(), "SELECT status FROM runs"),
        "status\nfailed\n"
    );
    assert_eq!(
        csv(dir.path(), "SELECT line FROM logs WHERE stream = 'stderr'"),
        "line\nTraceback: boom\n"
    );
    assert_eq!(
        csv(
            dir.path(),
            "SELECT value FROM tags WHERE key = 'runql.exit_code'"
        ),
        "value\n3\n"
    );
}

#[test]
fn a_command_killed_by_a_signal_is_a_killed_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = wrap(dir.path(), "echo started; kill -9 $$", &[]);
    assert_eq!(out.status.code(), Some(137));
    assert_eq!(
        csv(dir.path(), "SELECT status FROM runs"),
        "status\nkilled\n"
    );
    assert!(csv(dir.path(), "SELECT line FROM logs").contains("killed by signal 9"));
}

#[test]
fn a_missing_program_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = runql()
        .args([
            "--store",
            &dir.path().to_string_lossy(),
            "run",
            "--",
            "/nonexistent/train",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot start /nonexistent/train"));
    assert_eq!(
        csv(dir.path(), "SELECT status FROM runs"),
        "status\nfailed\n"
    );
}

#[test]
fn a_background_process_holding_the_pipes_does_not_hold_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let t = std::time::Instant::now();
    let out = wrap(dir.path(), "sleep 600 & echo started", &[]);
    // A hang detector, not a timing: the background sleep would hold us for ten minutes.
    assert!(t.elapsed() < std::time::Duration::from_secs(120));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        csv(dir.path(), "SELECT status FROM runs"),
        "status\nfinished\n"
    );
    assert!(csv(dir.path(), "SELECT line FROM logs").contains("started"));
}

#[test]
fn progress_bars_on_stderr_pass_through_and_are_logged_per_redraw() {
    let dir = tempfile::tempdir().unwrap();
    let out = wrap(dir.path(), r"printf '10%%\r50%%\r100%%\n' >&2", &[]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).matches("100%").count(),
        1
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("10%\r50%\r100%"));
    assert_eq!(
        csv(
            dir.path(),
            "SELECT count(*) AS n FROM logs WHERE stream = 'stderr'"
        ),
        "n\n3\n"
    );
}
