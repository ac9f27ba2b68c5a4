//! [`Engine`]: a DataFusion session whose catalog is a runql store.

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider, TableProvider,
};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::dataframe::DataFrame;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use runql_core::Store;

use crate::catalog::RunqlSchema;
use crate::error::{Error, Result};
use crate::table::ExtensionTable;

/// The catalog and schema queries resolve unqualified table names in.
pub const CATALOG: &str = "runql";
/// See [`CATALOG`].
pub const SCHEMA: &str = "public";

/// SQL over every run of a store.
///
/// ```no_run
/// # async fn demo() -> runql_query::Result<()> {
/// let engine = runql_query::Engine::open("~/.runql").await?;
/// let best = engine
///     .query("SELECT run_id, min FROM metric_summary WHERE key = 'val_loss' ORDER BY min LIMIT 5")
///     .await?;
/// println!("{}", arrow::util::pretty::pretty_format_batches(&best)?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Engine {
    ctx: SessionContext,
    store: Store,
    writable: bool,
    /// A session for one statement (see [`Engine::session`]): statements that only change
    /// the session are refused, having nothing to change.
    one_statement: bool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("store", &self.store.url())
            .field("writable", &self.writable)
            .finish()
    }
}

/// Options for an [`Engine`], from [`Engine::builder`].
#[derive(Debug)]
pub struct EngineBuilder {
    store: Store,
    writable: bool,
    config: SessionConfig,
}

impl EngineBuilder {
    /// Allows statements that change things: `CREATE TABLE`, `CREATE VIEW`, `INSERT`, `COPY`…
    /// They act on the session (in memory) or on files they name, never on the store's runs.
    pub fn writable(mut self, writable: bool) -> Self {
        self.writable = writable;
        self
    }

    /// DataFusion settings (target partitions, batch size, …). The default catalog and schema
    /// are always runql's.
    pub fn config(mut self, config: SessionConfig) -> Self {
        self.config = config;
        self
    }

    /// Opens the engine: checks that the store can be read.
    pub async fn build(self) -> Result<Engine> {
        self.store.check_readable().await?;
        let config = self
            .config
            .with_information_schema(true)
            .with_create_default_catalog_and_schema(false)
            .with_default_catalog_and_schema(CATALOG, SCHEMA);
        let state = datafusion::execution::SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(crate::coop::YieldingAmplifiers))
            .build();
        let ctx = SessionContext::new_with_state(state);
        let objects = ObjectStoreUrl::parse("runql://store/")?;
        ctx.register_object_store(objects.as_ref(), self.store.object_store());
        let catalog = MemoryCatalogProvider::new();
        catalog.register_schema(
            SCHEMA,
            Arc::new(RunqlSchema::new(self.store.clone(), objects.clone())),
        )?;
        ctx.register_catalog(CATALOG, Arc::new(catalog));
        crate::functions::register(&ctx, &self.store, &objects);
        let engine = Engine {
            ctx,
            store: self.store,
            writable: self.writable,
            one_statement: false,
        };
        engine.refresh_tables().await?;
        Ok(engine)
    }
}

impl Engine {
    /// Opens a read-only engine over the store at `url` (a path, `file://`, `s3://`, `gs://`,
    /// `az://` or `memory://`).
    pub async fn open(url: &str) -> Result<Engine> {
        Engine::builder(Store::open(url)?).build().await
    }

    /// A read-only engine over an open store.
    pub async fn new(store: Store) -> Result<Engine> {
        Engine::builder(store).build().await
    }

    /// An engine with options.
    pub fn builder(store: Store) -> EngineBuilder {
        EngineBuilder {
            store,
            writable: false,
            config: SessionConfig::new(),
        }
    }

    /// An engine over a session set up elsewhere (a distributed one), read-only.
    #[cfg_attr(not(feature = "ballista"), allow(dead_code))]
    pub(crate) fn from_parts(ctx: SessionContext, store: Store) -> Engine {
        Engine {
            ctx,
            store,
            writable: false,
            one_statement: false,
        }
    }

    /// A session of its own for one statement, over the same catalog: what it sets or
    /// prepares changes nothing for anyone else (such statements are refused: there is no
    /// later statement for them to act on), and its operators get at most `memory_limit`
    /// bytes (DataFusion's memory pool: sorts, joins and aggregations past it fail with a
    /// "resources exhausted" error instead of growing the process). What a server does for
    /// each request.
    pub fn session(&self, memory_limit: Option<usize>) -> Result<Engine> {
        let state = self.ctx.state();
        let mut runtime = RuntimeEnv::clone(state.runtime_env());
        if let Some(limit) = memory_limit {
            runtime.memory_pool = Arc::new(
                datafusion::execution::memory_pool::GreedyMemoryPool::new(limit),
            );
        }
        let state = datafusion::execution::SessionStateBuilder::new_from_existing(state)
            .with_runtime_env(Arc::new(runtime))
            .build();
        Ok(Engine {
            ctx: SessionContext::new_with_state(state),
            store: self.store.clone(),
            writable: self.writable,
            one_statement: true,
        })
    }

    /// The store queried.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The DataFusion session, to register functions or run plans directly.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Plans `sql` (one statement) and returns it as a DataFusion [`DataFrame`], not run yet.
    pub async fn sql(&self, sql: &str) -> Result<DataFrame> {
        let plan = self.ctx.state().create_logical_plan(sql).await?;
        if !self.writable
            && let Some(statement) = refused_statement(&plan)
        {
            return Err(Error::ReadOnly { statement });
        }
        if self.one_statement
            && let LogicalPlan::Statement(s) = &plan
            && !matches!(s, datafusion::logical_expr::Statement::Execute(_))
        {
            return Err(Error::SessionStatement {
                statement: words(s.name()),
            });
        }
        Ok(self.ctx.execute_logical_plan(plan).await?)
    }

    /// Runs `sql` (one statement) and collects its result.
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        Ok(self.sql(sql).await?.collect().await?)
    }

    /// Discovers the extension tables declared in the store (plugins' tables) and serves each
    /// namespace as a SQL schema: `SELECT * FROM optuna.trials`. Called by the builder; call it
    /// again to see tables declared since.
    pub async fn refresh_tables(&self) -> Result<()> {
        let defs = self.store.list_tables().await?;
        let Some(catalog) = self.ctx.catalog(CATALOG) else {
            return Ok(());
        };
        let objects = ObjectStoreUrl::parse("runql://store/")?;
        let mut schemas: std::collections::BTreeMap<String, Arc<MemorySchemaProvider>> =
            Default::default();
        for def in defs {
            let schema = schemas
                .entry(def.namespace.clone())
                .or_insert_with(|| Arc::new(MemorySchemaProvider::new()));
            let name = def.name.clone();
            let table = ExtensionTable::new(self.store.clone(), def, objects.clone());
            schema.register_table(name, Arc::new(table))?;
        }
        for (namespace, schema) in schemas {
            catalog.register_schema(&namespace, schema)?;
        }
        Ok(())
    }

    /// Registers a table of the embedding program beside runql's, under `name`.
    pub fn register_table(&self, name: &str, table: Arc<dyn TableProvider>) -> Result<()> {
        self.ctx.register_table(name, table)?;
        Ok(())
    }
}

/// The kind of the first statement in `plan` that would change something, if any.
fn refused_statement(plan: &LogicalPlan) -> Option<String> {
    let mut found = None;
    let _ = plan.apply(|p| {
        found = match p {
            LogicalPlan::Ddl(ddl) => Some(match ddl.name() {
                "CreateMemoryTable" => "CREATE TABLE".to_string(),
                other => words(other),
            }),
            LogicalPlan::Dml(dml) => Some(dml.op.to_string().to_uppercase()),
            LogicalPlan::Copy(_) => Some("COPY".to_string()),
            _ => None,
        };
        Ok(if found.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}

/// `CreateMemoryTable` → `CREATE MEMORY TABLE`.
fn words(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push(' ');
        }
        out.extend(c.to_uppercase());
    }
    out
}
