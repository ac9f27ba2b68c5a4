//! `runql plugin list|install|info|remove` and `runql ingest FILE…`: the plugin host
//! (runql-plugins) driven from the command line.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use runql_core::Store;
use runql_plugins::{Ingester, Limits, Registry, Sandbox};

/// `runql plugin …`.
#[derive(Debug, Subcommand)]
pub enum PluginAction {
    /// List the plugins runql can use (first-party and installed)
    List,
    /// Install a plugin from a .wasm component (pinned by its sha256)
    Install {
        /// The component, built for wasm32-wasip2 against runql's plugin contract
        file: PathBuf,
    },
    /// Show what a plugin reads and the tables it writes
    Info { name: String },
    /// Remove an installed plugin (the rows it wrote stay)
    Remove { name: String },
}

/// The sandbox's limits, from the command line.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct LimitArgs {
    /// Largest memory a plugin may use, in MiB
    #[arg(long = "plugin-memory", value_name = "MIB", default_value_t = 1024)]
    memory_mib: usize,
    /// CPU time a plugin may spend on one file, in seconds
    #[arg(long = "plugin-time", value_name = "SECONDS", default_value_t = 120)]
    time_s: u64,
    /// Largest output (Arrow IPC) a plugin may return for one file, in MiB
    #[arg(long = "plugin-output", value_name = "MIB", default_value_t = 4096)]
    output_mib: usize,
}

impl LimitArgs {
    fn limits(self) -> Limits {
        Limits {
            memory_bytes: self.memory_mib << 20,
            cpu_time: Duration::from_secs(self.time_s),
            output_bytes: self.output_mib << 20,
        }
    }
}

fn registry(store: Store) -> Result<Registry> {
    let sandbox = Sandbox::new(Sandbox::default_cache_dir())?;
    Ok(Registry::new(store, Arc::new(sandbox)))
}

pub fn plugin(rt: &tokio::runtime::Runtime, url: &str, action: PluginAction) -> Result<()> {
    let store = Store::open(url)?;
    let registry = registry(store)?;
    rt.block_on(async {
        match action {
            PluginAction::List => {
                let mut table = comfy_table::Table::new();
                table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
                table.set_header(["name", "version", "description", "tables", "source"]);
                for p in registry.list().await? {
                    table.add_row([
                        p.name.clone(),
                        p.version.clone(),
                        p.description.clone(),
                        p.tables
                            .iter()
                            .map(|(t, _)| format!("{}.{t}", p.name))
                            .collect::<Vec<_>>()
                            .join("\n"),
                        if p.builtin {
                            "first-party".to_string()
                        } else {
                            format!("installed, sha256 {}", &p.sha256[..12])
                        },
                    ]);
                }
                println!("{table}");
                println!("`runql plugin info NAME` shows what a plugin reads and its columns.");
            }
            PluginAction::Install { file } => {
                let wasm = std::fs::read(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let p = registry
                    .install(&file.display().to_string(), wasm.into())
                    .await?;
                println!(
                    "installed {} {} (sha256 {}): tables {}",
                    p.name,
                    p.version,
                    p.sha256,
                    p.tables
                        .iter()
                        .map(|(t, _)| format!("{}.{t}", p.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            PluginAction::Info { name } => {
                let ready = registry.get(&name).await?;
                let p = &ready.plugin;
                println!("{} {} — {}", p.name, p.version, p.description);
                println!(
                    "source:   {}",
                    if p.builtin {
                        "first-party (ships with runql)"
                    } else {
                        "installed"
                    }
                );
                println!("sha256:   {}", p.sha256);
                println!("contract: runql:plugin@{}", p.contract);
                println!("reads:");
                for f in &p.formats {
                    println!("  - {f}");
                }
                println!("tables (each also has project and run_id first):");
                for t in &ready.info.tables {
                    println!("  {}.{} — {}", p.name, t.name, t.doc);
                    for f in t.schema.fields() {
                        println!("      {} {}", f.name(), f.data_type());
                    }
                }
            }
            PluginAction::Remove { name } => {
                let p = registry.remove(&name).await?;
                println!(
                    "removed {} {} (its tables and rows stay in the store)",
                    p.name, p.version
                );
            }
        }
        Ok(())
    })
}

fn parse_options(options: &[String]) -> Result<Vec<(String, String)>> {
    options
        .iter()
        .map(|o| match o.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("--option {o:?}: use KEY=VALUE"),
        })
        .collect()
}

/// A byte progress bar on a terminal for files worth one.
fn bar(path: &Path) -> Option<ProgressBar> {
    let size = std::fs::metadata(path).ok()?.len();
    if size < 8 << 20 {
        return None;
    }
    let b = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr());
    b.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b.set_message(
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    Some(b)
}

#[allow(clippy::too_many_arguments)]
pub fn ingest(
    rt: &tokio::runtime::Runtime,
    url: &str,
    files: &[PathBuf],
    plugin: Option<&str>,
    project: &str,
    run: Option<&str>,
    options: &[String],
    limits: LimitArgs,
) -> Result<()> {
    let options = parse_options(options)?;
    let store = Store::open(url)?;
    let limits = limits.limits();
    let ingester = Ingester::new(registry(store)?.with_limits(limits)).with_limits(limits);
    let mut failed = 0;
    for file in files {
        let progress = bar(file);
        let report = rt.block_on(ingester.ingest(
            file,
            project,
            run,
            plugin,
            &options,
            progress.clone().map(|b| {
                Arc::new(move |n: u64| b.set_position(n)) as runql_plugins::ingest::Progress
            }),
        ));
        if let Some(b) = progress {
            b.finish_and_clear();
        }
        match report {
            Ok(r) if r.already => println!(
                "{}: already ingested with {} into run {} (nothing written)",
                file.display(),
                r.plugin,
                r.run_id
            ),
            Ok(r) => {
                let rows = r
                    .rows
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(t, n)| format!("{n} {t}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let children = if r.child_runs > 0 {
                    format!(" and {} child runs", r.child_runs)
                } else {
                    String::new()
                };
                println!(
                    "{}: {} {} → run {}{children}: {rows}",
                    file.display(),
                    r.plugin,
                    r.plugin_version,
                    r.run_id
                );
            }
            Err(e) => {
                failed += 1;
                eprintln!("runql: {}", crate::message(&anyhow::Error::new(e)));
            }
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} files were not ingested (nothing was written for them)",
            files.len()
        );
    }
    Ok(())
}
