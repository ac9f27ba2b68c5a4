//! The web dashboard in a real headless Chromium, driven by Playwright
//! (tests/browser/dashboard.py), against `runql serve` over a demo store with plugin data.
//! Skipped without Chromium and Playwright unless RUNQL_REQUIRE_BROWSER is set (scripts/test
//! installs both and sets it). RUNQL_SCREENSHOTS=DIR keeps the screenshots (docs/img holds
//! the committed ones).

use std::path::Path;
use std::process::Command;

use crate::cli::{demo_store, runql};
use crate::mlflow::serve;

/// Python with Playwright, and Chromium: `None` (the test skipped) without them, unless
/// RUNQL_REQUIRE_BROWSER is set. The hostile suite uses it too.
pub(crate) fn browser() -> Option<(String, String)> {
    let python = std::env::var("RUNQL_PYTHON").unwrap_or_else(|_| "python3".into());
    let chromium = std::env::var("RUNQL_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let has_playwright = Command::new(&python)
        .args(["-c", "import playwright.sync_api"])
        .output()
        .is_ok_and(|o| o.status.success());
    if has_playwright && Path::new(&chromium).exists() {
        return Some((python, chromium));
    }
    let why = format!("Playwright for {python}: {has_playwright}; {chromium} exists: false");
    if std::env::var_os("RUNQL_REQUIRE_BROWSER").is_some() {
        panic!("no browser to test the dashboard with ({why}); scripts/test installs them");
    }
    eprintln!("skipped: no browser ({why})");
    None
}

fn ingest(store: &Path, project: &str, files: &[&str]) {
    let fixtures = Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("../plugins/fixtures");
    let out = runql()
        .args(["--store", &store.to_string_lossy(), "ingest", "-p", project])
        .args(files.iter().map(|f| fixtures.join(f)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ingest failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_dashboard_in_a_real_browser() {
    let Some((python, chromium)) = browser() else {
        return;
    };
    let dir = demo_store();
    ingest(dir.path(), "sweeps", &["optuna/journal.log"]);
    ingest(
        dir.path(),
        "rl-cartpole",
        &["rl/monitor/single/monitor.csv"],
    );
    ingest(
        dir.path(),
        "llm-finetune",
        &["llm/chat.jsonl", "llm/otel_spans.json"],
    );
    let server = serve(dir.path());
    let tmp = tempfile::tempdir().unwrap();
    let shots = std::env::var("RUNQL_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| tmp.path().to_path_buf());
    std::fs::create_dir_all(&shots).unwrap();
    let script = format!(
        "{}/tests/browser/dashboard.py",
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
    );
    let out = Command::new(&python)
        .arg(script)
        .arg(&server.url)
        .arg(&shots)
        .env("RUNQL_CHROMIUM", chromium)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the dashboard test failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "projects", "runs", "run", "compare", "live", "traces", "nested", "sql", "optuna", "rl",
        "llm",
    ] {
        assert!(
            shots.join(format!("dashboard-{page}.png")).exists(),
            "no screenshot of {page}"
        );
    }
}
