//! `runql import mlflow PATH`: an MLflow file store (`mlruns/`, as `mlflow` writes it with a
//! `file:` tracking URI) read into the store — every experiment (a project, by its name), run
//! (under its MLflow run id, nested runs under their parent), param, full metric history, tag,
//! artifact, and deleted experiments and runs marked deleted. The original ids are kept as
//! tags (`mlflow.import.experiment_id`, `mlflow.import.run_id`). A run already in the store is
//! skipped, so a second import writes nothing twice and an interrupted one resumes.
//!
//! The file store is a tree of small YAML and text files, not one file format, so the host
//! reads it (plugins parse one file each).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use runql_core::store::ProjectChange;
use runql_core::{Capture, RunId, RunStatus, Store};
use tokio::runtime::Runtime;

/// What an import did.
#[derive(Debug, Default)]
struct Report {
    experiments: usize,
    runs: usize,
    skipped: usize,
    points: u64,
    artifacts: usize,
}

/// A `meta.yaml`'s top-level `key: value` scalars.
fn meta(path: &Path) -> Result<BTreeMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        // Nested values (`tags: []` lists) start with a space or a dash: not needed here.
        if line.starts_with([' ', '-', '#']) {
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        if let Some(v) = scalar(v.trim()) {
            out.insert(k.trim().to_string(), v);
        }
    }
    Ok(out)
}

/// A YAML scalar as MLflow's YAML writer emits one: plain, 'single' or "double" quoted.
fn scalar(v: &str) -> Option<String> {
    if v.is_empty() || v == "null" || v == "~" || v == "[]" || v == "{}" {
        return None;
    }
    if let Some(inner) = v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        return Some(inner.replace("''", "'"));
    }
    if v.starts_with('"') {
        return serde_json::from_str::<String>(v)
            .ok()
            .or_else(|| Some(v.trim_matches('"').to_string()));
    }
    Some(v.to_string())
}

/// The files below `dir` as (key, path): `a/b` for `dir/a/b` (metric, param and tag keys may
/// have slashes, which the file store turns into folders).
fn keyed_files(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(dir) {
                out.push((rel.to_string_lossy().replace('\\', "/"), p));
            }
        }
    }
    out.sort();
    out
}

fn status_of(v: Option<&String>) -> Option<RunStatus> {
    match v.map(String::as_str) {
        Some("3" | "FINISHED") => Some(RunStatus::Finished),
        Some("4" | "FAILED") => Some(RunStatus::Failed),
        Some("5" | "KILLED") => Some(RunStatus::Killed),
        // RUNNING or SCHEDULED: nobody writes it any more; left open, it reads `crashed`.
        _ => None,
    }
}

/// A metric file: one point a line, `timestamp value [step]` (ms; older stores have no step).
fn points(path: &Path) -> Result<Vec<(i64, f64, i64)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        let parsed = (|| {
            let ts: i64 = f.first()?.parse().ok()?;
            let value: f64 = f.get(1)?.parse().ok()?;
            let step: i64 = f.get(2).map_or(Some(0), |s| s.parse().ok())?;
            Some((step, value, ts.saturating_mul(1000)))
        })();
        match parsed {
            Some(p) => out.push(p),
            None => bail!(
                "{} line {}: expected `timestamp value step`, found {line:?}",
                path.display(),
                n + 1
            ),
        }
    }
    Ok(out)
}

/// Where a run's artifacts are: its `artifact_uri` when that is a local folder, else the
/// `artifacts` folder beside its `meta.yaml`.
fn artifact_dir(run_dir: &Path, meta: &BTreeMap<String, String>) -> PathBuf {
    if let Some(uri) = meta.get("artifact_uri")
        && let Some(p) = uri.strip_prefix("file://")
    {
        let p = PathBuf::from(p);
        if p.is_dir() {
            return p;
        }
    }
    run_dir.join("artifacts")
}

pub(crate) fn mlflow(rt: &Runtime, url: &str, path: &Path) -> Result<()> {
    if !path.is_dir() {
        bail!(
            "{} is not a folder: give the MLflow file store (the `mlruns` folder a `file:` \
             tracking URI writes)",
            path.display()
        );
    }
    let store = Store::open(url).with_context(|| format!("cannot open store {url}"))?;
    // Experiments: folders with a meta.yaml naming one, deleted ones in .trash.
    let mut experiments: Vec<(PathBuf, bool)> = Vec::new();
    for (dir, deleted) in [(path.to_path_buf(), false), (path.join(".trash"), true)] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.join("meta.yaml").is_file() && e.file_name() != ".trash" {
                experiments.push((p, deleted));
            }
        }
    }
    experiments.sort();
    if experiments.is_empty() {
        bail!(
            "{} holds no MLflow experiment (no <id>/meta.yaml): give the `mlruns` folder itself",
            path.display()
        );
    }
    let mut report = Report::default();
    let spinner = crate::progress::Spinner::start(format!("importing {}", path.display()));
    for (dir, trashed) in experiments {
        let m = meta(&dir.join("meta.yaml"))?;
        let Some(name) = m.get("name").cloned() else {
            continue;
        };
        let exp_id = m.get("experiment_id").cloned().unwrap_or_else(|| {
            dir.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        let deleted = trashed || m.get("lifecycle_stage").map(String::as_str) == Some("deleted");
        let project = store.project(&name);
        let mut set_tags = vec![("mlflow.import.experiment_id".to_string(), exp_id.clone())];
        for (k, p) in keyed_files(&dir.join("tags")) {
            set_tags.push((k, std::fs::read_to_string(&p).unwrap_or_default()));
        }
        rt.block_on(store.create_project(&name))
            .with_context(|| format!("creating project {name:?}"))?;
        rt.block_on(store.change_project(
            &name,
            &ProjectChange {
                set_tags,
                deleted: deleted.then_some(true),
                artifact_location: m.get("artifact_location").cloned(),
                ..Default::default()
            },
        ))
        .with_context(|| format!("recording experiment {name:?}"))?;
        report.experiments += 1;
        let existing: std::collections::HashSet<String> = rt
            .block_on(store.list_runs(Some(&name)))?
            .into_iter()
            .map(|r| r.run_id)
            .collect();
        // Runs: the experiment's subfolders with a meta.yaml; parents first, so that a child
        // names a run that is there.
        let mut runs: Vec<(PathBuf, BTreeMap<String, String>, Option<String>)> = Vec::new();
        for e in std::fs::read_dir(&dir)?.flatten() {
            let p = e.path();
            let mp = p.join("meta.yaml");
            if !mp.is_file() {
                continue;
            }
            let rm = meta(&mp)?;
            if rm.get("run_id").or(rm.get("run_uuid")).is_none() {
                continue;
            }
            let parent = std::fs::read_to_string(p.join("tags/mlflow.parentRunId")).ok();
            runs.push((p, rm, parent));
        }
        runs.sort_by_key(|(_, _, parent)| parent.is_some());
        for (run_dir, rm, parent) in runs {
            let mlflow_id = rm
                .get("run_id")
                .or(rm.get("run_uuid"))
                .cloned()
                .unwrap_or_default();
            let id: Option<RunId> = mlflow_id.parse().ok();
            if id.is_some_and(|id| existing.contains(&id.to_string())) {
                report.skipped += 1;
                continue;
            }
            spinner.set_message(format!(
                "importing {}: {name} / {mlflow_id} ({} runs, {} points)",
                path.display(),
                report.runs,
                report.points
            ));
            let tags = keyed_files(&run_dir.join("tags"));
            let run_name = rm.get("run_name").cloned().or_else(|| {
                tags.iter()
                    .find(|(k, _)| k == "mlflow.runName")
                    .and_then(|(_, p)| std::fs::read_to_string(p).ok())
            });
            let mut b = project
                .run()
                .capture(Capture::none())
                .tag("mlflow.import.run_id", mlflow_id.clone())
                .tag("mlflow.import.experiment_id", exp_id.clone());
            if let Some(id) = id {
                b = b.run_id(id);
            }
            if let Some(n) = run_name {
                b = b.name(n);
            }
            if let Some(p) = parent
                .as_deref()
                .and_then(|p| p.trim().parse::<RunId>().ok())
            {
                b = b.parent_id(p);
            }
            if let Some(start) = rm.get("start_time").and_then(|s| s.parse::<i64>().ok()) {
                b = b.started_at(start.saturating_mul(1000));
            }
            let run = b
                .start()
                .with_context(|| format!("starting run {mlflow_id} of {name:?}"))?;
            let params: Vec<(String, String)> = keyed_files(&run_dir.join("params"))
                .into_iter()
                .map(|(k, p)| (k, std::fs::read_to_string(p).unwrap_or_default()))
                .collect();
            run.log_params(params.iter().map(|(k, v)| (k.as_str(), v.clone())))
                .with_context(|| format!("params of run {mlflow_id}"))?;
            for (k, p) in &tags {
                if k == "mlflow.runName" || k == "mlflow.parentRunId" {
                    continue;
                }
                run.set_tag(k, std::fs::read_to_string(p).unwrap_or_default())
                    .with_context(|| format!("tag {k} of run {mlflow_id}"))?;
            }
            for (key, p) in keyed_files(&run_dir.join("metrics")) {
                let pts = points(&p)?;
                report.points += pts.len() as u64;
                run.log_points(pts.iter().map(|&(step, v, ts)| (key.as_str(), step, v, ts)))
                    .with_context(|| format!("metric {key} of run {mlflow_id}"))?;
            }
            let artifacts = artifact_dir(&run_dir, &rm);
            for (rel, p) in keyed_files(&artifacts) {
                run.log_artifact_as(&p, &rel)
                    .with_context(|| format!("artifact {rel} of run {mlflow_id}"))?;
                report.artifacts += 1;
            }
            let run_id = run.id().to_string();
            match (
                status_of(rm.get("status")),
                rm.get("end_time").and_then(|s| s.parse::<i64>().ok()),
            ) {
                (Some(status), Some(end)) => run.finish_at(status, end.saturating_mul(1000))?,
                (Some(status), None) => run.finish_with(status)?,
                (None, _) => run.release()?,
            }
            if deleted || rm.get("lifecycle_stage").map(String::as_str) == Some("deleted") {
                rt.block_on(store.set_run_deleted(&name, &run_id, true))?;
            }
            report.runs += 1;
        }
    }
    drop(spinner);
    writeln!(
        std::io::stdout(),
        "imported {} experiments: {} runs ({} already there, skipped), {} metric points, {} artifacts",
        report.experiments,
        report.runs,
        report.skipped,
        report.points,
        report.artifacts
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_scalars_as_mlflow_writes_them() {
        assert_eq!(scalar("plain"), Some("plain".into()));
        assert_eq!(scalar("'it''s'"), Some("it's".into()));
        assert_eq!(scalar(r#""a \"b\"""#), Some("a \"b\"".into()));
        assert_eq!(scalar("null"), None);
        assert_eq!(scalar("[]"), None);
    }

    #[test]
    fn metric_lines_parse_with_and_without_steps() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("loss");
        std::fs::write(&f, "1700000000000 0.5 3\n1700000000001 nan\n").unwrap();
        let p = points(&f).unwrap();
        assert_eq!(p[0], (3, 0.5, 1_700_000_000_000_000));
        assert!(p[1].1.is_nan() && p[1].0 == 0);
        std::fs::write(&f, "oops\n").unwrap();
        assert!(points(&f).unwrap_err().to_string().contains("line 1"));
    }
}
