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
                *next = s + 1;
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

/// Copies one stream of the child line by line: into `logs`, and to our own stream.
fn pump(
    run: &Run,
    stream: &'static str,
    from: impl Read,
    mut to: impl Write,
) -> std::thread::Result<()> {
    let mut reader = BufReader::new(from);
    let mut buf = Vec::new();
    let mut steps = HashMap::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        if stream == "stdout"
            && let Some(cmd) = line.strip_prefix("@runql ")
        {
            if let Err(e) = protocol(run, cmd, &mut steps) {
                let _ = writeln!(std::io::stderr(), "runql: ignored `@runql {cmd}`: {e}");
            }
            continue;
        }
        let _ = to.write_all(&buf);
        let _ = to.flush();
        let _ = run.log_line(stream, line);
    }
    Ok(())
}

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
    let status = std::thread::scope(|s| {
        let run = &run;
        s.spawn(move || pump(run, "stdout", out, std::io::stdout()));
        s.spawn(move || pump(run, "stderr", err, std::io::stderr()));
        child.wait()
    })
    .context("waiting for the command")?;

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
