//! `runql run -- CMD…`: runs any program as a run. Its command line becomes the run's command
//! and `--key value` arguments its params; git state, environment files and system metrics are
//! captured; every line it prints is kept in `logs` (and still shown); its exit status becomes
//! the run's status, and this process exits with the program's code.
//!
//! The program can log into the same run by printing lines that start with `@runql ` (they are
//! not shown): `@runql metric loss=0.31 acc=0.9 step=100`, `@runql param lr=0.1`,
//! `@runql tag note=any text`. It also gets `RUNQL_RUN_ID`, `RUNQL_PROJECT` and `RUNQL_STORE`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use runql_core::capture::shell_quote;
use runql_core::model::RunStatus;
use runql_core::{Run, Store};

/// Options of `runql run`.
#[derive(Debug)]
pub struct Wrap {
    pub project: String,
    pub name: Option<String>,
    pub group: Option<String>,
    pub command: Vec<String>,
}

/// `--key value`, `--key=value` and bare `--flag` arguments, in order, first one wins.
pub fn params_from_args(args: &[String]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        let Some(flag) = a.strip_prefix("--").filter(|f| !f.is_empty()) else {
            continue;
        };
        let (key, value) = match flag.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => match args.get(i) {
                Some(v) if !v.starts_with("--") => {
                    i += 1;
                    (flag.to_string(), v.clone())
                }
                _ => (flag.to_string(), "true".to_string()),
            },
        };
        if !key.is_empty() && !out.iter().any(|(k, _)| *k == key) {
            out.push((key, value));
        }
    }
    out
}

/// Applies one `@runql …` line; returns an error message for a malformed one.
fn protocol(run: &Run, line: &str, steps: &mut HashMap<String, i64>) -> Result<(), String> {
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    let rest = rest.trim();
    match verb {
        "metric" => {
            let mut step = None;
            let mut values = Vec::new();
            for pair in rest.split_whitespace() {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("expected key=value, got {pair:?}"))?;
                let v: f64 = match v {
                    "nan" | "NaN" => f64::NAN,
                    "inf" | "Infinity" => f64::INFINITY,
                    "-inf" | "-Infinity" => f64::NEG_INFINITY,
                    v => v.parse().map_err(|_| format!("{k}={v}: not a number"))?,
                };
                if k == "step" {
                    step = Some(v as i64);
                } else {
                    values.push((k.to_string(), v));
                }
            }
            for (k, v) in values {
                let next = steps.entry(k.clone()).or_insert(0);
                let s = step.unwrap_or(*next);
                *next = s.saturating_add(1);
                run.log_metric(&k, s, v).map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        "param" | "tag" => {
            let (k, v) = rest
                .split_once('=')
                .ok_or_else(|| format!("expected {verb} key=value, got {rest:?}"))?;
            if verb == "param" {
                run.log_param(k.trim(), v.trim()).map_err(|e| e.to_string())
            } else {
                run.set_tag(k.trim(), v.trim()).map_err(|e| e.to_string())
            }
        }
        other => Err(format!(
            "unknown @runql verb {other:?} (metric, param or tag)"
        )),
    }
}

/// What the pump threads hand to the thread that owns the run.
enum Event {
    Line(&'static str, String),
    Protocol(String),
}

/// Copies the child's standard output: each line is shown and logged, `@runql` lines are
/// handed over instead. Runs until the pipe closes.
fn pump_stdout(from: impl Read, tx: mpsc::Sender<Event>) {
    let mut reader = BufReader::new(from);
    let mut buf = Vec::new();
    let mut out = std::io::stdout();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        let event = match line.strip_prefix("@runql ") {
            Some(cmd) => Event::Protocol(cmd.to_string()),
            None => {
                let _ = out.write_all(&buf);
                let _ = out.flush();
                Event::Line("stdout", line.to_string())
            }
        };
        if tx.send(event).is_err() {
            break;
        }
    }
}

/// Copies the child's standard error byte for byte as it arrives (progress bars redraw with
/// `\r`), and logs it split into lines at `\n` or `\r`.
fn pump_stderr(mut from: impl Read, tx: mpsc::Sender<Event>) {
    let mut chunk = [0u8; 8192];
    let mut line: Vec<u8> = Vec::new();
    let mut err = std::io::stderr();
    let flush_line = |line: &mut Vec<u8>| {
        if !line.is_empty() {
            let text = String::from_utf8_lossy(line).into_owned();
            line.clear();
            tx.send(Event::Line("stderr", text)).is_ok()
        } else {
            true
        }
    };
    loop {
        let n = match from.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let _ = err.write_all(&chunk[..n]);
        let _ = err.flush();
        for &b in &chunk[..n] {
            if b == b'\n' || b == b'\r' {
                if !flush_line(&mut line) {
                    return;
                }
            } else if line.len() < MAX_LINE {
                line.push(b);
            }
        }
    }
    flush_line(&mut line);
}

/// Longest line kept in `logs`; the rest of a longer line is shown but not stored.
const MAX_LINE: usize = 64 * 1024;

/// Runs the command as a run; returns the exit code to exit with.
pub fn run(store: &Store, wrap: Wrap) -> Result<i32> {
    let Some((program, args)) = wrap.command.split_first() else {
        bail!("give the command to run after `--`, e.g. runql run -- python train.py --lr 0.1");
    };
    let command_line = wrap
        .command
        .iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    let mut builder = store.project(&wrap.project).run().command(command_line);
    if let Some(n) = &wrap.name {
        builder = builder.name(n.clone());
    } else {
        let base = std::path::Path::new(program)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| program.clone());
        // `python train.py …` is named after its script; `./train.sh --lr 1` after itself.
        let script = args
            .first()
            .filter(|a| !a.starts_with('-') && (a.contains('.') || a.contains('/')));
        builder = builder.name(match script {
            Some(s) => format!("{base} {s}"),
            None => base,
        });
    }
    if let Some(g) = &wrap.group {
        builder = builder.group(g.clone());
    }
    let run = builder.start().context("cannot start the run")?;
    for (k, v) in params_from_args(args) {
        if let Err(e) = run.log_param(&k, &v) {
            eprintln!("runql: param {k} not recorded: {e}");
        }
    }
    let id = run.id().to_string();
    eprintln!("runql: run {id} in project {}", wrap.project);

    let child = Command::new(program)
        .args(args)
        .env("RUNQL_RUN_ID", &id)
        .env("RUNQL_PROJECT", &wrap.project)
        .env("RUNQL_STORE", store.url())
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            let _ = run.log_line("stderr", format!("runql: cannot start {program}: {e}"));
            run.finish_with(RunStatus::Failed)?;
            bail!("cannot start {program}: {e}");
        }
    };
    let out = child.stdout.take().context("child stdout")?;
    let err = child.stderr.take().context("child stderr")?;
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    std::thread::spawn(move || pump_stdout(out, tx));
    std::thread::spawn(move || pump_stderr(err, tx2));
    let mut steps = HashMap::new();
    let mut handle = |event: Event| match event {
        Event::Line(stream, line) => {
            let _ = run.log_line(stream, line);
        }
        Event::Protocol(cmd) => {
            if let Err(e) = protocol(&run, &cmd, &mut steps) {
                eprintln!("runql: ignored `@runql {cmd}`: {e}");
            }
        }
    };
    // Log output while the program runs; once it has exited, take what is left in its pipes,
    // but do not wait for a background process that inherited them.
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(event) => handle(event),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break child.wait()?,
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(event) => handle(event),
            Err(_) => break,
        }
    }

    let (state, code) = match status.code() {
        Some(0) => (RunStatus::Finished, 0),
        Some(c) => (RunStatus::Failed, c),
        None => {
            #[cfg(unix)]
            let signal = std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0);
            #[cfg(not(unix))]
            let signal = 0;
            let _ = run.log_line("stderr", format!("runql: killed by signal {signal}"));
            (RunStatus::Killed, 128 + signal)
        }
    };
    run.set_tag("runql.exit_code", code.to_string())?;
    run.finish_with(state)?;
    eprintln!("runql: run {id} {state}", state = state.as_str());
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn long_options_become_params() {
        let p = params_from_args(&strings(&[
            "train.py",
            "--lr",
            "0.1",
            "--epochs=3",
            "--fp16",
            "--name",
            "a b",
            "-v",
            "--lr",
            "9",
        ]));
        assert_eq!(
            p,
            vec![
                ("lr".into(), "0.1".into()),
                ("epochs".into(), "3".into()),
                ("fp16".into(), "true".into()),
                ("name".into(), "a b".into()),
            ]
        );
    }
}
