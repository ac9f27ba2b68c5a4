//! The official `mlflow` Python client against `runql serve`: the client's own calls and
//! errors, then the same runs read back with SQL. Skipped without Python and mlflow, unless
//! RUNQL_REQUIRE_PYTHON is set (scripts/test sets it and installs mlflow-skinny).

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use crate::cli::{csv, runql};

pub(crate) fn python() -> Option<String> {
    let python = std::env::var("RUNQL_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import mlflow"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Some(python)
    } else if std::env::var_os("RUNQL_REQUIRE_PYTHON").is_some() {
        panic!("{python} cannot import mlflow; scripts/test installs it");
    } else {
        eprintln!("skipped: no Python with mlflow ({python})");
        None
    }
}

/// `runql serve` on a free port; killed when dropped.
pub(crate) struct Server {
    child: std::process::Child,
    pub(crate) url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        // `mlflow server` starts uvicorn workers and job runners: it runs in its own process
        // group (see mlflow_server), and the whole group goes.
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn serve(store: &std::path::Path) -> Server {
    let mut child = runql()
        .args(["--store", &store.to_string_lossy(), "serve", "--port", "0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    Server { child, url }
}

#[test]
fn the_mlflow_client_logs_into_runql() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    let script = format!(
        "{}/tests/python/mlflow_client.py",
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
    );
    let out = Command::new(&python)
        .arg(script)
        .env("MLFLOW_TRACKING_URI", &server.url)
        .env("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mlflow client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    let parent = ids["parent"].as_str().unwrap();

    // The same runs, through SQL.
    let sql = |q: &str| csv(dir.path(), q);
    assert_eq!(
        sql("SELECT name, status FROM runs WHERE project = 'mlflow-compat' ORDER BY name"),
        "name,status\nbroken,failed\nchild,finished\npaged,finished\nparent,finished\n"
    );
    assert_eq!(
        sql(&format!(
            "SELECT key, value FROM params WHERE run_id = '{parent}' ORDER BY key"
        )),
        "key,value\nepochs,3\nlr,0.01\noptimizer,adam\n"
    );
    assert_eq!(
        sql(&format!(
            "SELECT isnan(value) AS nan FROM metrics WHERE run_id = '{parent}' AND key = 'weird'"
        )),
        "nan\ntrue\n"
    );
    assert_eq!(
        sql(&format!(
            "SELECT parent_run_id FROM runs WHERE run_id = '{}'",
            ids["child"].as_str().unwrap()
        )),
        format!("parent_run_id\n{parent}\n")
    );
}

#[test]
fn sklearn_autolog_logs_into_runql() {
    let Some(python) = python() else { return };
    let has_sklearn = Command::new(&python)
        .args(["-c", "import sklearn"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_sklearn {
        assert!(
            std::env::var_os("RUNQL_REQUIRE_PYTHON").is_none(),
            "{python} cannot import sklearn; scripts/test installs it"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    let script = format!(
        "{}/tests/python/mlflow_autolog.py",
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
    );
    let out = Command::new(&python)
        .arg(script)
        .env("MLFLOW_TRACKING_URI", &server.url)
        .env("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "autolog failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        csv(
            dir.path(),
            "SELECT p.value FROM params p JOIN runs r USING (run_id) WHERE r.project = 'autolog' AND p.key = 'C'"
        ),
        "value\n0.5\n"
    );
}

/// `mlflow.openai.autolog()` with the real `openai` client (against a fake OpenAI server on
/// loopback): its LLM span lands in `mlflow.spans` with the model and the token usage, joined
/// to the run it was made in.
#[test]
fn openai_autolog_traces_into_runql() {
    let Some(python) = python() else { return };
    let has_openai = Command::new(&python)
        .args(["-c", "import openai"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_openai {
        assert!(
            std::env::var_os("RUNQL_REQUIRE_PYTHON").is_none(),
            "{python} cannot import openai; scripts/test installs it"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    let script = format!(
        "{}/tests/python/mlflow_openai_trace.py",
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
    );
    let out = Command::new(&python)
        .arg(script)
        .env("MLFLOW_TRACKING_URI", &server.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the openai trace failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default(),
    )
    .unwrap();
    assert_eq!(
        csv(
            dir.path(),
            &format!(
                "SELECT s.span_type, s.model, s.input_tokens, s.output_tokens, s.total_tokens, s.status, r.name \
                 FROM mlflow.spans s JOIN runs r USING (project, run_id) WHERE s.trace_id = '{}'",
                printed["trace_id"].as_str().unwrap()
            )
        ),
        "span_type,model,input_tokens,output_tokens,total_tokens,status,name\nCHAT_MODEL,gpt-4o-mini,12,3,15,OK,qa\n"
    );
}

/// The OpenTelemetry SDK's own OTLP/HTTP exporter (protobuf), and an OTLP JSON request, into
/// `runql serve`: spans in `mlflow.spans` with their tree, model and tokens, and each trace's
/// row from its root span.
#[test]
fn opentelemetry_sdk_exports_spans_into_runql() {
    let Some(python) = python() else { return };
    let has_exporter = Command::new(&python)
        .args([
            "-c",
            "import opentelemetry.exporter.otlp.proto.http.trace_exporter",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_exporter {
        assert!(
            std::env::var_os("RUNQL_REQUIRE_PYTHON").is_none(),
            "{python} cannot import the OTLP exporter; scripts/test installs it"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    let script = format!(
        "{}/tests/python/otlp_export.py",
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
    );
    let out = Command::new(&python)
        .arg(script)
        .env("RUNQL_URL", &server.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the OTLP export failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let otel = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        csv(
            dir.path(),
            "SELECT s.name, s.kind, s.parent_span_id IS NULL AS root, s.model, s.total_tokens, s.status \
             FROM mlflow.spans s WHERE s.project = 'otel-app' ORDER BY s.trace_id = 'tr-5b8efff798038103d269b633813fc60c', s.start_time"
        ),
        "name,kind,root,model,total_tokens,status\n\
         answer,INTERNAL,true,,,UNSET\n\
         llm,INTERNAL,false,gpt-4o-mini,13,UNSET\n\
         json-span,SERVER,true,claude-x,,OK\n"
    );
    assert_eq!(
        csv(
            dir.path(),
            &format!(
                "SELECT state, request_preview, response_preview FROM mlflow.traces WHERE trace_id = 'tr-{otel}'"
            )
        ),
        "state,request_preview,response_preview\nOK,capital of France?,Paris\n"
    );
}

/// The Python with the full `mlflow` package (its server), when there is one.
fn mlflow_server_python() -> Option<String> {
    let python = std::env::var("RUNQL_MLFLOW_PYTHON").ok()?;
    let ok = Command::new(&python)
        .args(["-c", "import mlflow.server, sklearn"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(python)
}

/// `mlflow server` (SQLite, proxied artifacts) on a free port; killed when dropped.
fn mlflow_server(python: &str, dir: &std::path::Path) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(python)
        .process_group(0)
        .args([
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .arg("--backend-store-uri")
        .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
        .arg("--artifacts-destination")
        .arg(dir.join("artifacts"))
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let server = Server { child, url };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && Command::new(python)
                .args([
                    "-c",
                    &format!(
                        "import urllib.request; urllib.request.urlopen('{}/health')",
                        server.url
                    ),
                ])
                .output()
                .is_ok_and(|o| o.status.success());
        if up {
            return server;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "mlflow server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// The same client scripts against `mlflow server` itself: they test MLflow's behaviour, not
/// runql's (documented differences are switched by COMPAT_TARGET).
#[test]
fn the_same_client_suite_passes_against_mlflow_server() {
    let Some(python) = mlflow_server_python() else {
        assert!(
            std::env::var_os("RUNQL_REQUIRE_PYTHON").is_none()
                || std::env::var_os("RUNQL_MLFLOW_PYTHON").is_none(),
            "RUNQL_MLFLOW_PYTHON cannot import mlflow.server and sklearn"
        );
        eprintln!("skipped: set RUNQL_MLFLOW_PYTHON to a Python with the full mlflow package");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = mlflow_server(&python, dir.path());
    for script in ["mlflow_client.py", "mlflow_autolog.py"] {
        let path = format!(
            "{}/tests/python/{script}",
            std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
        );
        let out = Command::new(&python)
            .arg(&path)
            .env("MLFLOW_TRACKING_URI", &server.url)
            .env("COMPAT_TARGET", "mlflow")
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script} against mlflow server:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
