//! What each subcommand does.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use runql_core::Store;
use runql_query::Engine;
use tokio::runtime::Runtime;

use crate::format::{self, Format, TextLayout};
use crate::query::{collect, quote, resolve_run, tail, terminal_width};
use crate::{Cli, Command, demo, repl, split};

pub fn run(cli: Cli) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = dispatch(&rt, cli);
    // Every command has awaited its own work by now; what may still run is a query the user
    // cancelled with Ctrl-C (a CPU-bound join does not stop at once). Don't wait for it to exit.
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    result
}

fn dispatch(rt: &tokio::runtime::Runtime, cli: Cli) -> Result<()> {
    let url = cli.store.clone().unwrap_or_else(Store::default_url);
    match cli.command {
        None => {
            let engine = open(rt, &url)?;
            repl::run(rt, engine, &[])
        }
        Some(Command::Demo { serve, port }) => run_demo(rt, cli.store, serve.then_some(port)),
        Some(Command::Sql {
            query,
            file,
            format,
            output,
            engine,
        }) => {
            let text = match (query, file) {
                (Some(q), _) => q,
                (None, Some(f)) if f.as_os_str() == "-" => read_stdin()?,
                (None, Some(f)) => std::fs::read_to_string(&f)
                    .with_context(|| format!("cannot read SQL file {}", f.display()))?,
                (None, None) if !std::io::stdin().is_terminal() => read_stdin()?,
                (None, None) => {
                    bail!("give the SQL as an argument, with -f FILE, or on standard input")
                }
            };
            let engine = match engine {
                Some(address) => open_distributed(rt, &url, &address)?,
                None => open(rt, &url)?,
            };
            run_sql(rt, &engine, &text, format, output)
        }
        Some(Command::Runs {
            project,
            limit,
            format,
        }) => {
            let engine = open(rt, &url)?;
            let filter = project
                .map(|p| format!("WHERE project = {}", quote(&p)))
                .unwrap_or_default();
            let sql = format!(
                "SELECT run_id, project, name, status, parent_run_id IS NOT NULL AS child, \
                 created, coalesce(ended, heartbeat) - started AS duration \
                 FROM runs {filter} ORDER BY created DESC, run_id LIMIT {limit}"
            );
            run_sql(rt, &engine, &sql, format, None)
        }
        Some(Command::Show { run }) => {
            let engine = open(rt, &url)?;
            show(rt, &engine, &run)
        }
        Some(Command::Compact { project }) => compact(rt, &url, project),
        Some(Command::Import {
            source: crate::ImportSource::Mlflow { path },
        }) => crate::import::mlflow(rt, &url, &path),
        Some(Command::Plugin { action }) => crate::plugin::plugin(rt, &url, action),
        Some(Command::Ingest {
            files,
            project,
            run,
            plugin,
            options,
            limits,
        }) => crate::plugin::ingest(
            rt,
            &url,
            &files,
            plugin.as_deref(),
            &project,
            run.as_deref(),
            &options,
            limits,
        ),
        Some(Command::Serve {
            host,
            port,
            tokens,
            tokens_file,
            allow_anonymous,
            allowed_hosts,
            max_body_mb,
            compact_after,
            wal_dir,
            silent_after,
            sql_timeout,
            sql_memory_mb,
            sql_max_result_mb,
            pg_port,
            flight_port,
            tls_cert,
            tls_key,
        }) => {
            let mut access = runql_server::Access::loopback_only().anonymous(allow_anonymous);
            for t in tokens {
                if t.len() < 16 {
                    bail!("--token must be at least 16 characters");
                }
                access = access.token(t, runql_server::Scope::Write);
            }
            if let Some(f) = tokens_file {
                access = access.tokens_file(&f).map_err(anyhow::Error::msg)?;
            }
            for h in allowed_hosts {
                access = access.allow_host(h);
            }
            let options = runql_server::Options {
                access,
                max_body: max_body_mb.saturating_mul(1 << 20),
                compact_after: (compact_after > 0)
                    .then(|| std::time::Duration::from_secs(compact_after)),
                wal_dir,
                silent_after: std::time::Duration::from_secs(silent_after.max(1)),
                sql: runql_server::SqlLimits {
                    timeout: std::time::Duration::from_secs(sql_timeout.max(1)),
                    memory: sql_memory_mb.max(1).saturating_mul(1 << 20),
                    max_result: sql_max_result_mb.max(1).saturating_mul(1 << 20),
                },
            };
            let engine = open(rt, &url)?;
            let endpoints = Endpoints {
                pg_port,
                flight_port,
                tls: tls_cert.zip(tls_key),
            };
            serve_http(
                rt,
                engine,
                &url,
                (&host, port),
                options,
                allow_anonymous,
                &endpoints,
            )
        }
        Some(Command::Plot { key, runs, out }) => {
            let engine = open(rt, &url)?;
            let text = crate::plot::command(rt, &engine, &key, &runs, out.as_deref())?;
            write!(std::io::stdout(), "{text}")?;
            Ok(())
        }
        Some(Command::Compare { runs, format }) => {
            let engine = open(rt, &url)?;
            compare(rt, &engine, &runs, format)
        }
        Some(Command::Gc {
            project,
            grace_minutes,
        }) => gc(rt, &url, project, grace_minutes),
        Some(Command::Export {
            dir,
            project,
            format,
        }) => {
            let engine = open(rt, &url)?;
            export(rt, &engine, &dir, project, format)
        }
        Some(Command::Run {
            project,
            name,
            group,
            command,
        }) => {
            let store = Store::open(&url).with_context(|| format!("cannot open store {url}"))?;
            // The program gets Ctrl-C; this process waits to record how it ended.
            rt.spawn(async { while tokio::signal::ctrl_c().await.is_ok() {} });
            let code = crate::wrap::run(
                &store,
                crate::wrap::Wrap {
                    project,
                    name,
                    group,
                    command,
                },
            )?;
            std::process::exit(code);
        }
    }
}

/// Opens a read-only engine over the store at `url`.
pub fn open(rt: &Runtime, url: &str) -> Result<Engine> {
    rt.block_on(Engine::open(url))
        .with_context(|| format!("cannot open store {url}"))
}

/// An engine on a distributed cluster (`--engine ballista://HOST:PORT`); what it cannot see
/// is said on standard error.
#[cfg(feature = "ballista")]
fn open_distributed(rt: &Runtime, url: &str, address: &str) -> Result<Engine> {
    let store = runql_core::Store::open(url).with_context(|| format!("cannot open store {url}"))?;
    let (engine, notes) = rt
        .block_on(Engine::ballista(store, address))
        .with_context(|| format!("cannot query store {url} on {address}"))?;
    for line in notes.lines() {
        eprintln!("note: {line}");
    }
    Ok(engine)
}

#[cfg(not(feature = "ballista"))]
fn open_distributed(_rt: &Runtime, _url: &str, address: &str) -> Result<Engine> {
    bail!("--engine {address}: this runql was built without Ballista (cargo feature `ballista`)")
}

fn read_stdin() -> Result<String> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("cannot read SQL from standard input")?;
    Ok(s)
}

/// Runs every statement of `text`, writing each result.
pub fn run_sql(
    rt: &Runtime,
    engine: &Engine,
    text: &str,
    format: Format,
    output: Option<PathBuf>,
) -> Result<()> {
    let (mut statements, rest) = split::split(text);
    if !split::is_blank(&rest) {
        statements.push(rest.trim().to_string());
    }
    if statements.is_empty() {
        bail!("no SQL statement to run");
    }
    let mut out: Box<dyn Write> = match &output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create output file {}", path.display()))?,
        )),
        None => {
            if format.is_binary() && std::io::stdout().is_terminal() {
                bail!(
                    "the {} format is binary: redirect standard output to a file or use -o FILE",
                    format.name()
                );
            }
            Box::new(std::io::BufWriter::new(std::io::stdout().lock()))
        }
    };
    let layout = TextLayout {
        width: None,
        ..TextLayout::default()
    };
    let many = statements.len() > 1;
    for (i, sql) in statements.iter().enumerate() {
        let spinner = crate::progress::Spinner::start("running the query");
        let result = rt.block_on(collect(engine, sql));
        drop(spinner);
        let (schema, batches) = result
            .with_context(|| {
                if many {
                    format!("statement {}", i + 1)
                } else {
                    String::new()
                }
            })
            .map_err(strip_empty_context)?;
        format::write(&mut *out, format, &schema, &batches, layout)?;
    }
    out.flush()?;
    Ok(())
}

/// Drops an empty context layer (single statements need no "statement 1:" prefix).
fn strip_empty_context(e: anyhow::Error) -> anyhow::Error {
    if e.to_string().is_empty() {
        match e.chain().nth(1) {
            Some(inner) => anyhow::anyhow!("{}", crate::message(&anyhow::anyhow!("{inner}"))),
            None => e,
        }
    } else {
        e
    }
}

fn show(rt: &Runtime, engine: &Engine, prefix: &str) -> Result<()> {
    let id = quote(&resolve_run(rt, engine, prefix)?);
    let mut out = std::io::stdout().lock();
    let width = terminal_width();
    let sections = [
        (
            "Run",
            format!("SELECT * FROM runs WHERE run_id = {id}"),
            true,
        ),
        (
            "Params",
            format!("SELECT key, value FROM params WHERE run_id = {id} ORDER BY key"),
            false,
        ),
        (
            "Tags",
            format!("SELECT key, value FROM tags WHERE run_id = {id} ORDER BY key"),
            false,
        ),
        (
            "Metrics",
            format!(
                "SELECT key, count AS points, last_step, last_value AS last, min, max \
                 FROM metric_summary WHERE run_id = {id} ORDER BY key"
            ),
            false,
        ),
        (
            "Artifacts",
            format!(
                "SELECT path, size, media_type FROM artifacts WHERE run_id = {id} ORDER BY path"
            ),
            false,
        ),
    ];
    for (title, sql, expanded) in sections {
        let (schema, batches) = rt.block_on(collect(engine, &sql))?;
        if batches.iter().all(|b| b.num_rows() == 0) {
            continue;
        }
        writeln!(out, "{title}")?;
        format::write(
            &mut out,
            Format::Table,
            &schema,
            &batches,
            TextLayout {
                width,
                expanded,
                ..TextLayout::default()
            },
        )?;
        writeln!(out)?;
    }
    Ok(())
}

fn compare(rt: &Runtime, engine: &Engine, prefixes: &[String], format: Format) -> Result<()> {
    let mut ids: Vec<String> = Vec::new();
    for p in prefixes {
        let id = resolve_run(rt, engine, p)?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    if ids.len() < 2 {
        bail!("compare needs two different runs");
    }
    let list = ids.iter().map(|i| quote(i)).collect::<Vec<_>>().join(", ");
    // Column names: the run's name and the start of its id, so two runs named alike differ.
    let (_, names) = rt.block_on(collect(
        engine,
        &format!("SELECT run_id, coalesce(name, '') FROM runs WHERE run_id IN ({list})"),
    ))?;
    let mut label = std::collections::HashMap::new();
    for b in &names {
        let id = arrow::array::AsArray::as_string::<i32>(b.column(0));
        let name = arrow::array::AsArray::as_string::<i32>(b.column(1));
        for i in 0..b.num_rows() {
            label.insert(
                id.value(i).to_string(),
                format!("{} …{}", name.value(i), tail(id.value(i), 6))
                    .trim()
                    .to_string(),
            );
        }
    }
    let n = ids.len();
    let columns = |value: &str| {
        ids.iter()
            .map(|id| {
                format!(
                    "max({value}) FILTER (WHERE run_id = {}) AS \"{}\"",
                    quote(id),
                    label
                        .get(id)
                        .cloned()
                        .unwrap_or_else(|| id.clone())
                        .replace('"', "")
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let params = format!(
        "SELECT key AS param, {}, CASE WHEN count(DISTINCT value) > 1 OR count(*) < {n} \
         THEN '≠' ELSE '' END AS differs FROM params WHERE run_id IN ({list}) \
         GROUP BY key ORDER BY differs DESC, key",
        columns("value")
    );
    let metrics = format!(
        "SELECT key AS metric, {} FROM metric_summary WHERE run_id IN ({list}) \
         GROUP BY key ORDER BY key",
        columns("last_value")
    );
    let width = terminal_width();
    let mut out = std::io::stdout().lock();
    for (title, sql) in [("Params", params), ("Final metrics (last value)", metrics)] {
        let (schema, batches) = rt.block_on(collect(engine, &sql))?;
        if format == Format::Table {
            writeln!(out, "{title}")?;
        }
        format::write(
            &mut out,
            format,
            &schema,
            &batches,
            TextLayout {
                width,
                ..TextLayout::default()
            },
        )?;
        if format == Format::Table {
            writeln!(out)?;
        }
    }
    Ok(())
}

fn gc(rt: &Runtime, url: &str, project: Option<String>, grace_minutes: u64) -> Result<()> {
    let store = Store::open(url).with_context(|| format!("cannot open store {url}"))?;
    let projects = match project {
        Some(p) => vec![p],
        None => rt.block_on(store.list_projects())?,
    };
    let grace = std::time::Duration::from_secs(grace_minutes.saturating_mul(60));
    for p in projects {
        let spinner = crate::progress::Spinner::start(format!("collecting garbage in {p}"));
        let r = rt
            .block_on(store.gc(&p, grace))
            .with_context(|| format!("collecting garbage in project {p}"))?;
        drop(spinner);
        writeln!(
            std::io::stdout(),
            "{p}: removed {} consumed live objects, {} unreferenced files, {} replaced table files, {} temporary files ({} bytes)",
            r.live_objects,
            r.unreferenced_files,
            r.replaced_files,
            r.temp_files,
            r.bytes
        )?;
    }
    Ok(())
}

fn export(
    rt: &Runtime,
    engine: &Engine,
    dir: &std::path::Path,
    project: Option<String>,
    format: Format,
) -> Result<()> {
    let ext = match format {
        Format::Parquet => "parquet",
        Format::Csv => "csv",
        Format::Ndjson => "ndjson",
        Format::Json => "json",
        Format::Arrow => "arrows",
        Format::Table | Format::Markdown => {
            bail!(
                "export writes parquet, csv, ndjson, json or arrow files, not {}",
                format.name()
            )
        }
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let filter = project
        .map(|p| format!(" WHERE project = {}", quote(&p)))
        .unwrap_or_default();
    for table in runql_core::schema::Table::ALL {
        let path = dir.join(format!("{}.{ext}", table.name()));
        let t = Instant::now();
        let spinner = crate::progress::Spinner::start(format!("exporting {}", table.name()));
        let (schema, batches) = rt.block_on(collect(
            engine,
            &format!("SELECT * FROM {}{filter}", table.name()),
        ))?;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(&path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        );
        format::write(&mut file, format, &schema, &batches, TextLayout::default())?;
        file.flush()?;
        drop(spinner);
        writeln!(
            std::io::stdout(),
            "{}: {rows} rows in {:.1?}",
            path.display(),
            t.elapsed()
        )?;
    }
    Ok(())
}

fn compact(rt: &Runtime, url: &str, project: Option<String>) -> Result<()> {
    let store = Store::open(url).with_context(|| format!("cannot open store {url}"))?;
    let projects = match project {
        Some(p) => vec![p],
        None => rt.block_on(store.list_projects())?,
    };
    for p in projects {
        let t = Instant::now();
        let spinner = crate::progress::Spinner::start(format!("compacting {p}"));
        let report = rt
            .block_on(store.compact(&p))
            .with_context(|| format!("compacting project {p}"))?;
        drop(spinner);
        writeln!(
            std::io::stdout(),
            "{p}: {} runs compacted into {} files ({} bytes) in {:.1?}",
            report.runs,
            report.files.len(),
            report.bytes,
            t.elapsed()
        )?;
        for t in &report.tables {
            writeln!(
                std::io::stdout(),
                "{p}: {}: {} files ({} rows) merged into one",
                t.table,
                t.files,
                t.rows
            )?;
        }
    }
    Ok(())
}

/// Ctrl-C (SIGINT), or SIGTERM — what systemd, `docker stop` and Kubernetes send. The
/// handlers are installed when this is called, not when the future is first polled: a signal
/// that arrives before the server serves still stops it cleanly.
fn stop_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        eprintln!("runql: stopping: finishing requests in flight, making what was logged durable");
    })
}

/// Where `runql demo` keeps its store unless `--store` says otherwise.
fn demo_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("runql").join("demo")
}

/// Serves `engine` (the dashboard, SQL, events, the MLflow API) until Ctrl-C.
/// The endpoints `runql serve` opens beside HTTP.
#[derive(Debug, Default)]
struct Endpoints {
    pg_port: Option<u16>,
    flight_port: Option<u16>,
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

fn serve_http(
    rt: &Runtime,
    engine: Engine,
    url: &str,
    (host, port): (&str, u16),
    options: runql_server::Options,
    allow_anonymous: bool,
    endpoints: &Endpoints,
) -> Result<()> {
    rt.block_on(async move {
        let stop = stop_signal()?;
        let listener = tokio::net::TcpListener::bind((host, port))
            .await
            .with_context(|| format!("cannot listen on {host}:{port}"))?;
        let addr = listener.local_addr()?;
        let has_tokens = options.access.has_tokens();
        let loopback_only = !has_tokens && !allow_anonymous;
        // Ready (the write-ahead log of a stopped server recovered) before saying so.
        let server = runql_server::Server::new(engine, options).await?;
        eprintln!("runql serving {url} on http://{addr} (Ctrl-C or SIGTERM stops)");
        // Dropped (no longer accepting) when serving ends.
        let _pg = match endpoints.pg_port {
            Some(pg_port) => {
                let pg_addr = tokio::net::lookup_host((host, pg_port))
                    .await
                    .with_context(|| format!("cannot resolve {host}"))?
                    .next()
                    .with_context(|| format!("{host} has no address"))?;
                let pg = server
                    .serve_postgres(&runql_server::PgOptions {
                        addr: pg_addr,
                        tls: endpoints.tls.clone(),
                    })
                    .await
                    .with_context(|| format!("cannot serve Postgres on {host}:{pg_port}"))?;
                let tls = if endpoints.tls.is_some() { ", TLS" } else { "" };
                eprintln!(
                    "runql serving Postgres on {} (psql -h {} -p {}{tls})",
                    pg.local_addr(),
                    pg.local_addr().ip(),
                    pg.local_addr().port()
                );
                Some(pg)
            }
            None => None,
        };
        let _flight = match endpoints.flight_port {
            Some(flight_port) => {
                let flight_addr = tokio::net::lookup_host((host, flight_port))
                    .await
                    .with_context(|| format!("cannot resolve {host}"))?
                    .next()
                    .with_context(|| format!("{host} has no address"))?;
                let flight = server
                    .serve_flight_sql(&runql_server::FlightOptions {
                        addr: flight_addr,
                        tls: endpoints.tls.clone(),
                    })
                    .await
                    .with_context(|| format!("cannot serve Flight SQL on {host}:{flight_port}"))?;
                let scheme = if endpoints.tls.is_some() {
                    "grpc+tls"
                } else {
                    "grpc"
                };
                eprintln!(
                    "runql serving Flight SQL on {scheme}://{}",
                    flight.local_addr()
                );
                Some(flight)
            }
            None => None,
        };
        if loopback_only && !addr.ip().is_loopback() {
            eprintln!("runql: no --token given: only clients on this machine will be answered");
        }
        if allow_anonymous && has_tokens {
            eprintln!(
                "runql: warning: --allow-anonymous beside tokens: anyone who can reach \
                 {addr} may read every run; writing still needs a write token"
            );
        } else if allow_anonymous {
            eprintln!(
                "runql: warning: --allow-anonymous without tokens: anyone who can reach \
                 {addr} may read, log and delete runs"
            );
        }
        runql_server::serve(listener, server, stop)
            .await
            .context("the server stopped")
    })
}

fn run_demo(rt: &Runtime, store: Option<String>, serve: Option<u16>) -> Result<()> {
    let url = match store {
        Some(url) => url,
        None => {
            let dir = demo_dir();
            // Only ever remove a folder the demo made (it leaves this marker).
            if dir.join("runql-demo").exists() {
                std::fs::remove_dir_all(&dir).with_context(|| {
                    format!("cannot clear the old demo store {}", dir.display())
                })?;
            }
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            std::fs::write(
                dir.join("runql-demo"),
                "made by `runql demo`; safe to delete\n",
            )?;
            dir.to_string_lossy().into_owned()
        }
    };
    let store = Store::open(&url).with_context(|| format!("cannot open store {url}"))?;
    if !rt.block_on(store.list_projects())?.is_empty() {
        bail!(
            "{url} already holds projects: run `runql demo` without --store, or give an empty folder"
        );
    }
    let t = Instant::now();
    let spinner = crate::progress::Spinner::start("filling the demo store");
    let live = demo::fill(&store).context("filling the demo store")?;
    drop(spinner);
    let runs = rt.block_on(store.list_runs(None))?.len();
    eprintln!(
        "Demo store {url}: 3 projects, {runs} runs (one still running), made in {:.1?}.",
        t.elapsed()
    );
    eprintln!("Open it again later with: runql --store {url}\n");
    let engine = rt.block_on(Engine::new(store))?;
    if let Some(port) = serve {
        // The live run goes on logging while the dashboard shows it.
        let result = serve_http(
            rt,
            engine,
            &url,
            ("127.0.0.1", port),
            runql_server::Options::default(),
            false,
            &Endpoints::default(),
        );
        drop(live);
        return result;
    }
    if std::io::stdin().is_terminal() {
        repl::run(rt, engine, &demo::SUGGESTED)?;
    } else {
        let mut out = std::io::stdout().lock();
        for (title, sql) in demo::SUGGESTED {
            writeln!(out, "-- {title}\n{sql}")?;
            let (schema, batches) = rt.block_on(collect(&engine, sql))?;
            format::write(
                &mut out,
                Format::Table,
                &schema,
                &batches,
                TextLayout::default(),
            )?;
            writeln!(out)?;
        }
    }
    drop(live);
    Ok(())
}
