//! `runql`: the SQL shell, one-shot queries, and store maintenance.
//!
//! The binary is thin: clap parses (every subcommand is one variant of [`Command`]), each
//! command opens the store and calls the library crates, and errors become one message and a
//! non-zero exit. A closed pipe (`runql sql … | head`) is a normal exit, as in ripgrep.

mod commands;
mod demo;
mod format;
mod import;
mod meta;
mod plot;
mod plugin;
mod progress;
mod query;
mod repl;
mod split;
mod wrap;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::format::Format;

/// SQL over every run of your ML experiments.
#[derive(Debug, Parser)]
#[command(name = "runql", version, about, long_about = None)]
pub struct Cli {
    /// The store: a folder, file://…, s3://bucket/prefix, gs://…, az://… or memory://
    /// [default: $RUNQL_STORE or ~/.runql]
    #[arg(long, global = true, value_name = "URL")]
    store: Option<String>,

    #[command(subcommand)]
    command: Option<Command>,
}

/// The subcommands; `runql` alone opens the SQL shell.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fill a demo store with a week of realistic runs and open the shell on it (without a
    /// terminal, run the suggested queries and exit)
    Demo {
        /// Serve the demo store instead: open the dashboard at http://127.0.0.1:PORT
        #[arg(long)]
        serve: bool,
        /// The port for --serve
        #[arg(long, default_value_t = 5000, requires = "serve")]
        port: u16,
    },
    /// Run SQL (one or more statements separated by `;`) and print the results
    Sql {
        /// The SQL; or use -f
        query: Option<String>,
        /// Read the SQL from a file (`-` for standard input)
        #[arg(
            short = 'f',
            long = "file",
            value_name = "FILE",
            conflicts_with = "query"
        )]
        file: Option<PathBuf>,
        /// Output format
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Write the output to a file instead of standard output
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        /// Run on an Apache DataFusion Ballista cluster instead of in this process:
        /// ballista://HOST:PORT names its scheduler. It reads the store's compacted Parquet
        /// (run `runql compact` first); its executors must reach the store under the same path
        #[arg(long, value_name = "URL")]
        engine: Option<String>,
    },
    /// List runs, newest first
    Runs {
        /// Only this project
        project: Option<String>,
        /// How many runs to list
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Output format
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Show one run: its record, params, tags and final metrics
    Show {
        /// The run id (or a unique prefix of it)
        run: String,
    },
    /// Run a command as a run: its argv, output, exit status, git state and system metrics are
    /// recorded; it can log metrics by printing `@runql metric key=value step=N` lines
    Run {
        /// The project the run belongs to
        #[arg(long, short = 'p', default_value = "default")]
        project: String,
        /// The run's name [default: the program and its script]
        #[arg(long)]
        name: Option<String>,
        /// A group (e.g. a sweep) to put the run in
        #[arg(long)]
        group: Option<String>,
        /// The command and its arguments, after `--`
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Draw runs' learning curves of one metric as a terminal chart, or write an SVG
    Plot {
        /// The metric key, e.g. val_loss
        key: String,
        /// Run ids or unique prefixes [default: the 5 latest runs that logged KEY]
        runs: Vec<String>,
        /// Write an SVG file instead of drawing in the terminal
        #[arg(long, value_name = "FILE.svg")]
        out: Option<PathBuf>,
    },
    /// Compare runs: params that differ, and final metrics side by side
    Compare {
        /// Two or more run ids (or unique prefixes)
        #[arg(required = true, num_args = 2..)]
        runs: Vec<String>,
        /// Output format
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Remove garbage: consumed live objects, unreferenced files, interrupted writes
    Gc {
        /// Only this project
        project: Option<String>,
        /// Keep unreferenced files younger than this many minutes (a compaction may be writing)
        #[arg(long, default_value_t = 60)]
        grace_minutes: u64,
    },
    /// Export every table (of every project, or one) to a folder of Parquet, CSV or NDJSON files
    Export {
        /// The folder to write (created if missing)
        dir: PathBuf,
        /// Only this project
        #[arg(long, short = 'p')]
        project: Option<String>,
        /// File format
        #[arg(long, value_enum, default_value = "parquet")]
        format: Format,
    },
    /// Serve the store over HTTP: read-only SQL at POST /api/sql (JSON, CSV or Arrow)
    Serve {
        /// Address to listen on (0.0.0.0 for every interface)
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Port to listen on
        #[arg(long, default_value_t = 5000)]
        port: u16,
        /// A bearer token with write (and read) access; repeat for several
        #[arg(long = "token", value_name = "TOKEN", env = "RUNQL_TOKEN")]
        tokens: Vec<String>,
        /// A file of `read TOKEN` / `write TOKEN` lines
        #[arg(long, value_name = "FILE")]
        tokens_file: Option<PathBuf>,
        /// Serve clients on other machines without a token (they get write access; beside
        /// --token, read access only)
        #[arg(long)]
        allow_anonymous: bool,
        /// A host name (or host:port) browsers may reach the server by besides localhost and
        /// IP addresses, e.g. the machine's name or the site of a proxy in front; pages of
        /// other sites are refused. Repeat for several
        #[arg(long = "allowed-host", value_name = "HOST")]
        allowed_hosts: Vec<String>,
        /// Largest request body, in MiB
        #[arg(long, default_value_t = 32)]
        max_body_mb: usize,
        /// Compact a project this many seconds after a run of it finishes (0: never)
        #[arg(long, value_name = "SECONDS", default_value_t = 5)]
        compact_after: u64,
        /// Where the write-ahead log of acknowledged writes lives [default: <store>/wal for a
        /// local store, ~/.local/state/runql/wal/<hash> for an object store]
        #[arg(long, value_name = "DIR")]
        wal_dir: Option<PathBuf>,
        /// A run logged through the server reads `crashed` after its client has been silent
        /// this long (it reads `running` again when the client logs)
        #[arg(long, value_name = "SECONDS", default_value_t = 600)]
        silent_after: u64,
        /// Stop a /api/sql query that runs longer than this
        #[arg(long, value_name = "SECONDS", default_value_t = 60)]
        sql_timeout: u64,
        /// Memory a /api/sql query's sorts, joins and aggregations may hold, in MiB
        #[arg(long, value_name = "MIB", default_value_t = 1024)]
        sql_memory_mb: usize,
        /// Largest /api/sql answer, in MiB of Arrow data
        #[arg(long, value_name = "MIB", default_value_t = 256)]
        sql_max_result_mb: usize,
        /// Also serve the PostgreSQL wire protocol on this port (of --host): psql, psycopg,
        /// JDBC, Grafana… read the store; the password is a token (docs/connect.md)
        #[arg(long, value_name = "PORT")]
        pg_port: Option<u16>,
        /// Also serve Arrow Flight SQL on this port (of --host): ADBC drivers read answers as
        /// Arrow (grpc://HOST:PORT; the token as a bearer header or password; docs/connect.md)
        #[arg(long, value_name = "PORT")]
        flight_port: Option<u16>,
        /// TLS certificate chain (PEM) of the Postgres and Flight SQL endpoints
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// TLS private key (PEM) of the Postgres and Flight SQL endpoints
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Import another tracker's history: `runql import mlflow mlruns/`
    Import {
        #[command(subcommand)]
        source: ImportSource,
    },
    /// Compact finished runs into Parquet (every project, or one)
    Compact {
        /// Only this project
        project: Option<String>,
    },
    /// Ingest files through a plugin: Optuna journals, SB3 Monitor CSVs, TensorBoard event
    /// files, LLM logs… (the plugin is chosen by asking each which files it recognises)
    Ingest {
        /// The files to ingest
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The project to ingest into (created if missing)
        #[arg(long, short = 'p')]
        project: String,
        /// The run to ingest into [default: a new run named after each file]
        #[arg(long)]
        run: Option<String>,
        /// Use this plugin instead of the one that recognises the file
        #[arg(long)]
        plugin: Option<String>,
        /// An option for the plugin (repeatable), e.g. --option allow_truncated=true
        #[arg(long = "option", value_name = "KEY=VALUE")]
        options: Vec<String>,
        #[command(flatten)]
        limits: plugin::LimitArgs,
    },
    /// Manage plugins: list, install FILE.wasm, info NAME, remove NAME
    Plugin {
        #[command(subcommand)]
        action: plugin::PluginAction,
    },
}

/// What `runql import` reads.
#[derive(Debug, clap::Subcommand)]
pub enum ImportSource {
    /// An MLflow file store (the `mlruns` folder): experiments, runs, params, metric
    /// histories, tags, artifacts; original ids kept as tags; a second import skips what is
    /// there
    Mlflow {
        /// The `mlruns` folder
        path: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runql: {}", message(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, without repeating a cause already in the message.
pub fn message(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.to_string().contains("Broken pipe")
    })
}
