//! The sandbox: one wasmtime engine, plugins loaded as components, and calls into them under
//! limits.
//!
//! A plugin gets no filesystem, network, environment, arguments or real clock: the WASI
//! interfaces a Rust `wasm32-wasip2` guest imports through its standard library (cli, io,
//! clocks, random) are linked with nothing behind them (fixed clocks, randomness that is not
//! random, stderr captured so a panic message reaches the error), and `wasi:filesystem` /
//! `wasi:sockets` are not linked at all, so a component importing them fails to load with an
//! error naming the import.
//!
//! Limits, each configurable ([`Limits`]): linear memory (a store limiter), CPU time (an epoch
//! deadline: a ticker thread advances the engine's epoch every [`TICK`], and the time a session
//! spends inside the plugin — and the host's time decoding its answers — is charged against its
//! budget), and output size (bytes of Arrow IPC
//! returned per input). A trapped instance cannot be entered again, so every session gets a
//! fresh instance (tens of µs, from a pre-instantiated component).
//!
//! Compiled components are cached on disk by sha256 (`Component::serialize`) and memory-mapped
//! back, so loading an installed plugin a second time costs well under a millisecond.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use sha2::Digest;
use wasmtime::component::{Component, HasData, Linker, ResourceAny, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::p2::bindings::sync as w;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{
    HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView, cli::WasiCli,
    cli::WasiCliView, clocks::WasiClocks, clocks::WasiClocksView, random::WasiRandom,
};

use crate::{Error, Result};

wasmtime::component::bindgen!({ world: "plugin", path: "wit" });

use exports::runql::plugin::parser as wit;

/// The contract version this host speaks (the `runql:plugin` WIT package version).
pub const CONTRACT_VERSION: &str = "1.0.0";
const CONTRACT_EXPORT: &str = "runql:plugin/parser@1.0.0";

/// How often the engine's epoch advances: the granularity of the CPU-time limit.
pub const TICK: Duration = Duration::from_millis(10);

/// The sandbox's limits for one input (or one `info`/`recognize` call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest linear memory of the plugin, in bytes.
    pub memory_bytes: usize,
    /// Time the plugin may spend computing on one input, over all its calls.
    pub cpu_time: Duration,
    /// Largest output (Arrow IPC bytes) for one input.
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 1 << 30,
            cpu_time: Duration::from_secs(120),
            output_bytes: 4 << 30,
        }
    }
}

/// A table a plugin writes, as it declared it.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub name: String,
    pub doc: String,
    /// Without the `project` column, which the host adds.
    pub schema: SchemaRef,
}

/// What a plugin says it is.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub formats: Vec<String>,
    pub tables: Vec<TableInfo>,
}

/// Per-store state: the WASI context (granting nothing), its resources, and the limiter.
struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// 2023-11-14T22:13:20Z, always.
struct FixedWall;
impl HostWallClock for FixedWall {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::from_secs(1_700_000_000)
    }
}

/// A monotonic clock that never moves.
struct FixedMonotonic;
impl HostMonotonicClock for FixedMonotonic {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

struct HasIo;
impl HasData for HasIo {
    type Data<'a> = &'a mut ResourceTable;
}

/// The WASI subset runql grants: everything a Rust std guest imports, nothing that reaches
/// outside (no filesystem, no sockets).
fn linker(engine: &Engine) -> wasmtime::Result<Linker<State>> {
    let mut l = Linker::new(engine);
    let l_ = &mut l;
    w::io::error::add_to_linker::<State, HasIo>(l_, |t| &mut t.table)?;
    w::io::poll::add_to_linker::<State, HasIo>(l_, |t| &mut t.table)?;
    w::io::streams::add_to_linker::<State, HasIo>(l_, |t| &mut t.table)?;
    w::clocks::wall_clock::add_to_linker::<State, WasiClocks>(l_, State::clocks)?;
    w::clocks::monotonic_clock::add_to_linker::<State, WasiClocks>(l_, State::clocks)?;
    w::random::random::add_to_linker::<State, WasiRandom>(l_, |t| t.wasi.random())?;
    w::random::insecure::add_to_linker::<State, WasiRandom>(l_, |t| t.wasi.random())?;
    w::random::insecure_seed::add_to_linker::<State, WasiRandom>(l_, |t| t.wasi.random())?;
    w::cli::exit::add_to_linker::<State, WasiCli>(l_, State::cli)?;
    w::cli::environment::add_to_linker::<State, WasiCli>(l_, State::cli)?;
    w::cli::stdin::add_to_linker::<State, WasiCli>(l_, State::cli)?;
    w::cli::stdout::add_to_linker::<State, WasiCli>(l_, State::cli)?;
    w::cli::stderr::add_to_linker::<State, WasiCli>(l_, State::cli)?;
    w::cli::terminal_input::add_to_linker::<State, WasiCli>(l_, State::cli)?;
    w::cli::terminal_output::add_to_linker::<State, WasiCli>(l_, State::cli)?;
    w::cli::terminal_stdin::add_to_linker::<State, WasiCli>(l_, State::cli)?;
    w::cli::terminal_stdout::add_to_linker::<State, WasiCli>(l_, State::cli)?;
    w::cli::terminal_stderr::add_to_linker::<State, WasiCli>(l_, State::cli)?;
    Ok(l)
}

/// The engine, its linker, the epoch ticker and the compiled-component cache.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<State>,
    cache_dir: Option<PathBuf>,
    stop: Arc<AtomicBool>,
    /// Components loaded by this sandbox, by sha256: loading one again costs a lookup.
    loaded: std::sync::Mutex<std::collections::HashMap<String, Loaded>>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("cache_dir", &self.cache_dir)
            .finish_non_exhaustive()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A version string of the compiled-code format: a cached component compiled by another
/// wasmtime or another configuration is not reused (wasmtime would refuse it anyway).
const CACHE_KEY: &str = concat!("wasmtime48-epoch-", env!("CARGO_PKG_VERSION"));

impl Sandbox {
    /// A sandbox caching compiled components in `cache_dir` (none: compile on every load).
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Sandbox> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| Error::Internal(e.to_string()))?;
        let linker = linker(&engine).map_err(|e| Error::Internal(e.to_string()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (ticker, flag) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("runql-plugin-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    ticker.increment_epoch();
                }
            })
            .map_err(|e| Error::Internal(format!("cannot start the epoch thread: {e}")))?;
        Ok(Sandbox {
            engine,
            linker,
            cache_dir,
            stop,
            loaded: Default::default(),
        })
    }

    /// The default cache folder: `$RUNQL_CACHE_DIR`, else `$XDG_CACHE_HOME/runql/plugins`, else
    /// `~/.cache/runql/plugins`.
    pub fn default_cache_dir() -> Option<PathBuf> {
        if let Some(d) = std::env::var_os("RUNQL_CACHE_DIR") {
            return Some(PathBuf::from(d).join("plugins"));
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("runql").join("plugins"))
    }

    /// Compiles (or takes from the cache) a component and checks that it implements the
    /// contract with the imports runql grants. `what` names it in errors (a file, a plugin).
    pub fn load(&self, what: &str, wasm: &[u8]) -> Result<Loaded> {
        let sha256 = hex::encode(sha2::Sha256::digest(wasm));
        let invalid = |message: String| Error::Invalid {
            what: what.to_string(),
            message,
        };
        if let Some(l) = self
            .loaded
            .lock()
            .ok()
            .and_then(|m| m.get(&sha256).cloned())
        {
            return Ok(Loaded {
                what: what.to_string(),
                ..l
            });
        }
        if !wasm.starts_with(b"\0asm") {
            return Err(invalid("it is not WebAssembly (no \\0asm header)".into()));
        }
        let component = self
            .compile(&sha256, wasm)
            .map_err(|e| invalid(chain(&e)))?;
        // The contract version, from the export's name, before anything else.
        let exports: Vec<String> = component
            .component_type()
            .exports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        if !exports.iter().any(|e| e == CONTRACT_EXPORT) {
            let found = exports
                .iter()
                .find_map(|e| e.strip_prefix("runql:plugin/parser@"))
                .map(|v| format!("it implements contract version {v}"))
                .unwrap_or_else(|| format!("it exports {exports:?}, not runql:plugin/parser"));
            return Err(invalid(format!(
                "{found}, and this runql speaks {CONTRACT_VERSION} (rebuild the plugin with a \
                 matching runql-plugin-sdk)"
            )));
        }
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| {
                let text = chain(&e);
                match denied_import(&text) {
                    Some(import) => invalid(format!(
                        "it imports {import}, which runql does not grant to plugins (no \
                         filesystem or network: the host hands the plugin its input's bytes)"
                    )),
                    None => invalid(text),
                }
            })
            .and_then(|pre| PluginPre::new(pre).map_err(|e| invalid(chain(&e))))?;
        let loaded = Loaded {
            what: what.to_string(),
            sha256: sha256.clone(),
            pre,
        };
        if let Ok(mut m) = self.loaded.lock() {
            m.insert(sha256, loaded.clone());
        }
        Ok(loaded)
    }

    fn compile(&self, sha256: &str, wasm: &[u8]) -> wasmtime::Result<Component> {
        let Some(dir) = &self.cache_dir else {
            return Component::from_binary(&self.engine, wasm);
        };
        let cached = dir.join(format!("{sha256}-{CACHE_KEY}.cwasm"));
        if cached.exists() {
            // SAFETY: the file was written by `Component::serialize` of this very wasmtime build
            // and configuration (CACHE_KEY is in its name, and wasmtime checks its own header and
            // refuses a mismatch with an error). It is only ever replaced by an atomic rename.
            #[allow(unsafe_code)]
            let loaded = unsafe { Component::deserialize_file(&self.engine, &cached) };
            if let Ok(c) = loaded {
                return Ok(c);
            }
        }
        let component = Component::from_binary(&self.engine, wasm)?;
        if let Ok(bytes) = component.serialize() {
            // Best effort: a read-only cache folder only costs compile time.
            let _ = write_atomically(&cached, &bytes);
        }
        Ok(component)
    }

    fn store(&self, limits: &Limits) -> (Store<State>, MemoryOutputPipe) {
        let stderr = MemoryOutputPipe::new(64 * 1024);
        let wasi = WasiCtx::builder()
            .stderr(stderr.clone())
            .wall_clock(FixedWall)
            .monotonic_clock(FixedMonotonic)
            .secure_random(wasmtime_wasi::Deterministic::new(vec![0x5a]))
            .insecure_random(wasmtime_wasi::Deterministic::new(vec![0x5a]))
            .insecure_random_seed(0)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let store_limits = StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes)
            .instances(64)
            .tables(64)
            .memories(16)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(
            &self.engine,
            State {
                wasi,
                table: ResourceTable::new(),
                limits: store_limits,
            },
        );
        store.limiter(|s| &mut s.limits);
        (store, stderr)
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Every message of an error's chain, joined.
fn chain(e: &wasmtime::Error) -> String {
    format!("{e:#}")
}

/// `wasi:filesystem/types@0.2.6` out of wasmtime's "component imports instance `…`, but a
/// matching implementation was not found in the linker".
fn denied_import(text: &str) -> Option<String> {
    let rest = text.split("imports instance `").nth(1)?;
    let name = rest.split('`').next()?;
    Some(name.to_string())
}

/// A component ready to be instantiated (cheap to clone: the compiled code is shared).
#[derive(Clone)]
pub struct Loaded {
    what: String,
    sha256: String,
    pre: PluginPre<State>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("what", &self.what)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// A running instance with its store and CPU budget.
struct Instance {
    store: Store<State>,
    plugin: Plugin,
    stderr: MemoryOutputPipe,
    budget: Duration,
}

impl Loaded {
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    fn instance(&self, sandbox: &Sandbox, limits: &Limits) -> Result<Instance> {
        let (mut store, stderr) = sandbox.store(limits);
        store.set_epoch_deadline(ticks(limits.cpu_time));
        let plugin = self.pre.instantiate(&mut store).map_err(|e| Error::Trap {
            plugin: self.what.clone(),
            message: format!("cannot start: {}", chain(&e)),
        })?;
        Ok(Instance {
            store,
            plugin,
            stderr,
            budget: limits.cpu_time,
        })
    }

    /// The plugin's description and tables.
    pub fn info(&self, sandbox: &Sandbox, limits: &Limits) -> Result<PluginInfo> {
        let mut i = self.instance(sandbox, limits)?;
        let info = i.call(&self.what, limits, |p, s| {
            p.runql_plugin_parser().call_describe(s)
        })?;
        let contract = |message: String| Error::Contract {
            plugin: self.what.clone(),
            message,
        };
        let mut tables = Vec::new();
        for t in info.tables {
            let reader = arrow::ipc::reader::StreamReader::try_new(Cursor::new(t.schema), None)
                .map_err(|e| {
                    contract(format!(
                        "the schema of table {:?} is not Arrow IPC: {e}",
                        t.name
                    ))
                })?;
            tables.push(TableInfo {
                name: t.name,
                doc: t.doc,
                schema: reader.schema(),
            });
        }
        Ok(PluginInfo {
            name: info.name,
            version: info.version,
            description: info.description,
            formats: info.formats,
            tables,
        })
    }

    /// How sure the plugin is that it reads this input (0–100).
    pub fn recognize(
        &self,
        sandbox: &Sandbox,
        limits: &Limits,
        name: &str,
        head: &[u8],
    ) -> Result<u8> {
        let mut i = self.instance(sandbox, limits)?;
        let score = i.call(&self.what, limits, |p, s| {
            p.runql_plugin_parser().call_recognize(s, name, head)
        })?;
        Ok(score.min(100))
    }

    /// Starts parsing one input.
    pub fn session(
        &self,
        sandbox: &Sandbox,
        limits: &Limits,
        name: &str,
        options: &[(String, String)],
    ) -> Result<Session> {
        let mut instance = self.instance(sandbox, limits)?;
        let resource = instance.call(&self.what, limits, |p, s| {
            p.runql_plugin_parser()
                .session()
                .call_constructor(s, name, options)
        })?;
        Ok(Session {
            plugin: self.what.clone(),
            file: name.to_string(),
            limits: *limits,
            instance,
            resource,
            output: 0,
        })
    }
}

fn ticks(d: Duration) -> u64 {
    (d.as_millis() / TICK.as_millis()).max(1) as u64
}

impl Instance {
    /// One call into the plugin, its time charged to the budget, its failure explained.
    fn call<R>(
        &mut self,
        plugin: &str,
        limits: &Limits,
        f: impl FnOnce(&Plugin, &mut Store<State>) -> wasmtime::Result<R>,
    ) -> Result<R> {
        self.store.set_epoch_deadline(ticks(self.budget));
        let start = Instant::now();
        let result = f(&self.plugin, &mut self.store);
        self.budget = self.budget.saturating_sub(start.elapsed());
        result.map_err(|e| self.explain(plugin, limits, &e))
    }

    /// Charges host work done on the plugin's behalf (decoding its answer) to its CPU budget:
    /// an answer crafted to be slow to read stalls the host no longer than the plugin's own
    /// code could.
    fn charge(&mut self, plugin: &str, limits: &Limits, spent: Duration) -> Result<()> {
        self.budget = self.budget.saturating_sub(spent);
        if self.budget.is_zero() {
            return Err(cpu_limit(plugin, limits));
        }
        Ok(())
    }

    fn explain(&self, plugin: &str, limits: &Limits, e: &wasmtime::Error) -> Error {
        let text = chain(e);
        let stderr = String::from_utf8_lossy(&self.stderr.contents())
            .trim()
            .to_string();
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => cpu_limit(plugin, limits),
            _ if text.contains("forcing trap when growing memory") => Error::Limit {
                plugin: plugin.to_string(),
                limit: "memory",
                detail: format!("{} MiB", limits.memory_bytes >> 20),
                flag: "--plugin-memory",
            },
            _ => {
                let message = if stderr.is_empty() {
                    text
                } else {
                    format!("{stderr} ({text})")
                };
                Error::Trap {
                    plugin: plugin.to_string(),
                    message,
                }
            }
        }
    }
}

fn cpu_limit(plugin: &str, limits: &Limits) -> Error {
    Error::Limit {
        plugin: plugin.to_string(),
        limit: "CPU time",
        detail: format!("{:?} per input", limits.cpu_time),
        flag: "--plugin-time",
    }
}

/// One input being parsed. Its instance is used for nothing else and dropped with it.
pub struct Session {
    plugin: String,
    file: String,
    limits: Limits,
    instance: Instance,
    resource: ResourceAny,
    output: usize,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("plugin", &self.plugin)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

/// Rows for one target table.
pub type Rows = (String, Vec<RecordBatch>);

impl Session {
    /// Feeds the next chunk of the input.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Rows>> {
        let (plugin, limits, resource) = (self.plugin.clone(), self.limits, self.resource);
        let answer = self.instance.call(&plugin, &limits, |p, s| {
            p.runql_plugin_parser()
                .session()
                .call_feed(s, resource, chunk)
        })?;
        self.rows(answer)
    }

    /// Ends the input.
    pub fn finish(&mut self) -> Result<Vec<Rows>> {
        let (plugin, limits, resource) = (self.plugin.clone(), self.limits, self.resource);
        let answer = self.instance.call(&plugin, &limits, |p, s| {
            p.runql_plugin_parser().session().call_finish(s, resource)
        })?;
        self.rows(answer)
    }

    fn rows(&mut self, answer: Result<Vec<wit::Rows>, String>) -> Result<Vec<Rows>> {
        let rows = answer.map_err(|message| Error::Input {
            plugin: self.plugin.clone(),
            file: self.file.clone(),
            message,
        })?;
        // The size first: nothing of an oversized answer is decoded.
        self.output += rows.iter().map(|r| r.ipc.len()).sum::<usize>();
        if self.output > self.limits.output_bytes {
            return Err(Error::Limit {
                plugin: self.plugin.clone(),
                limit: "output size",
                detail: format!("{} MiB of rows per input", self.limits.output_bytes >> 20),
                flag: "--plugin-output",
            });
        }
        let started = Instant::now();
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            if r.ipc.is_empty() {
                continue;
            }
            let reader = arrow::ipc::reader::StreamReader::try_new(Cursor::new(r.ipc), None)
                .map_err(|e| self.malformed(&r.table, &e))?;
            let batches = reader
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| self.malformed(&r.table, &e))?;
            out.push((r.table, batches));
        }
        let (plugin, limits) = (self.plugin.clone(), self.limits);
        self.instance.charge(&plugin, &limits, started.elapsed())?;
        Ok(out)
    }

    fn malformed(&self, table: &str, e: &arrow::error::ArrowError) -> Error {
        Error::Contract {
            plugin: self.plugin.clone(),
            message: format!("its rows for {table} are not a valid Arrow IPC stream: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denied_imports_are_named() {
        let text = "component imports instance `wasi:filesystem/types@0.2.6`, but a matching implementation was not found in the linker";
        assert_eq!(
            denied_import(text).as_deref(),
            Some("wasi:filesystem/types@0.2.6")
        );
        assert_eq!(denied_import("something else"), None);
    }

    #[test]
    fn garbage_is_not_a_plugin() {
        let sandbox = Sandbox::new(None).unwrap();
        let err = sandbox.load("junk.wasm", b"not wasm at all").unwrap_err();
        assert!(err.to_string().contains("junk.wasm"), "{err}");
        assert!(err.to_string().contains("not WebAssembly"), "{err}");
    }
}
