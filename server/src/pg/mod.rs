//! The PostgreSQL wire protocol (`runql serve --pg-port`): psql, psycopg, JDBC, Grafana and
//! every other Postgres client read the store with the SQL of `/api/sql`.
//!
//! The protocol is pgwire's, the SQL front (Postgres syntax, `pg_catalog`, the functions
//! clients call when they connect, `SET`/`SHOW`, cursors, transactions) is
//! datafusion-postgres'. runql adds what a server needs around them, as `/api/sql` has it:
//!
//! - **Auth**: the password is a token of `runql serve` (read or write, both may read);
//!   without tokens only clients on this machine are answered, as over HTTP.
//! - **A session per connection**: what one connection sets or prepares touches nobody else.
//! - **Read-only**: only queries, `EXPLAIN`, `SET`/`SHOW`, cursors and transaction statements
//!   run; anything else is refused with SQLSTATE 25006 (read_only_sql_transaction).
//! - **Limits**: each statement stops at the server's SQL time limit (SQLSTATE 57014) and its
//!   operators share the server's SQL memory limit (SQLSTATE 53200 when exceeded).
//! - **`COPY (query) TO STDOUT`**, in text or CSV format.
//! - Queries see everything the server has acknowledged (held runs are flushed first), and
//!   they run on the server's query threads, not on those answering HTTP.

use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement,
};
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire;
use datafusion_postgres::{DfSessionService, QueryHook};
use futures::{Sink, SinkExt, Stream, StreamExt};
use pgwire::api::auth::{
    DefaultServerParameterProvider, LoginInfo, StartupHandler, finish_authentication,
    protocol_negotiation, save_startup_parameters_to_metadata,
};
use pgwire::api::portal::Portal;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{CopyResponse, FieldInfo, QueryResponse, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionManager, PgWireConnectionState, PgWireServerHandlers,
    PidSecretKeyGenerator, RandomPidSecretKeyGenerator, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::copy::CopyData;
use pgwire::messages::data::DataRow;
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::tokio_rustls::rustls;
use runql_query::Engine;

mod functions;
mod rewrite;

use crate::auth::{Access, Scope};
use crate::sql::SqlLimits;

/// The version the server reports as `server_version` (clients pick their SQL by it; this is
/// the PostgreSQL whose catalog datafusion-postgres imitates).
const SERVER_VERSION: &str = "16.6 (runql)";

/// Where a Postgres endpoint listens, and with which certificate.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// The address to listen on (`127.0.0.1:5433`; port 0 picks one).
    pub addr: SocketAddr,
    /// TLS: a PEM certificate chain and its PEM (PKCS#8, PKCS#1 or SEC1) private key.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// A running Postgres endpoint; stops accepting when dropped (connections already open finish
/// their statement).
#[derive(Debug)]
pub struct PgEndpoint {
    addr: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
}

impl PgEndpoint {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for PgEndpoint {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// What every connection shares.
struct Shared {
    /// An engine of its own (its catalog holds `pg_catalog`, which `/api/sql` does not show).
    engine: Engine,
    limits: SqlLimits,
    access: Access,
    held: crate::mlflow::State,
    connections: Arc<ConnectionManager>,
    /// Each connection's cancel signal, by (pid, secret key): a cancel request bumps it, and
    /// the rows of the statement running stop.
    cancels: Arc<Cancels>,
    /// For the parser's calls that only look at a planned statement.
    planned: Arc<DfSessionService>,
    rewrite: rewrite::CatalogRewrite,
}

impl Shared {
    /// The session of the connection `client`, made on its first statement.
    async fn service<C: ClientInfo + ?Sized>(&self, client: &C) -> PgWireResult<Arc<Conn>> {
        if let Some(conn) = client.session_extensions().get::<Conn>() {
            return Ok(conn);
        }
        let session = self
            .engine
            .session(Some(self.limits.memory))
            .map_err(user)?;
        // Tables declared since the server opened the store (a plugin's) are listed too.
        session.refresh_tables().await.map_err(user)?;
        let ctx = Arc::new(session.context().clone());
        let service = DfSessionService::new_with_hooks(ctx.clone(), hooks(self.limits));
        Ok(client.session_extensions().get_or_insert_with(|| Conn {
            service: Arc::new(service),
            ctx,
        }))
    }
}

/// A connection's session.
struct Conn {
    service: Arc<DfSessionService>,
    ctx: Arc<SessionContext>,
}

/// The hooks of a connection, in order: refuse writes, then DataFusion's settings, then COPY,
/// then datafusion-postgres' own (cursors, Postgres' `SET`/`SHOW`, transactions).
fn hooks(limits: SqlLimits) -> Vec<Arc<dyn QueryHook>> {
    vec![
        Arc::new(ReadOnly),
        Arc::new(Settings),
        Arc::new(CopyOut { limits }),
        Arc::new(datafusion_postgres::hooks::cursor::CursorStatementHook),
        Arc::new(datafusion_postgres::hooks::set_show::SetShowHook),
        Arc::new(datafusion_postgres::hooks::transactions::TransactionStatementHook),
    ]
}

fn user(e: impl std::fmt::Display) -> PgWireError {
    error("XX000", e.to_string())
}

fn error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        code.to_string(),
        message.into(),
    )))
}

/// Starts the endpoint: binds `options.addr` and accepts on the server's query threads.
pub(crate) async fn start(
    state: &crate::state::AppState,
    options: &PgOptions,
) -> std::io::Result<PgEndpoint> {
    let tls = match &options.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None => None,
    };
    let engine = Engine::new(state.sql.engine.store().clone())
        .await
        .map_err(std::io::Error::other)?;
    datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog(
        engine.context(),
        runql_query::CATALOG,
        Arc::new(datafusion_postgres::auth::AuthManager::default()),
    )
    .map_err(|e| std::io::Error::other(e.to_string()))?;
    functions::register(engine.context())
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let rewrite = rewrite::CatalogRewrite::new(engine.context())
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let planned = Arc::new(DfSessionService::new(Arc::new(engine.context().clone())));
    let shared = Arc::new(Shared {
        engine,
        limits: state.sql.limits,
        access: state.gate.access.clone(),
        held: state.mlflow.clone(),
        connections: Arc::new(ConnectionManager::new()),
        cancels: Arc::default(),
        planned,
        rewrite,
    });
    let runtime = state
        .sql
        .runtime_handle()
        .ok_or_else(|| std::io::Error::other("the query threads are gone"))?;
    let listener = std::net::TcpListener::bind(options.addr)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let accept = runtime.spawn(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "the Postgres endpoint cannot listen");
                return;
            }
        };
        let handlers = Arc::new(Handlers(shared));
        loop {
            match listener.accept().await {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    let handlers = handlers.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        if let Err(e) = pgwire::tokio::process_socket(socket, tls, handlers).await {
                            tracing::debug!(%peer, error = %e, "a Postgres connection failed");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the Postgres endpoint cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(PgEndpoint { addr, accept })
}

/// A TLS acceptor of a PEM certificate chain and key; errors name the file.
fn tls_acceptor(cert: &Path, key: &Path) -> std::io::Result<pgwire::tokio::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bad = |path: &Path, e: &dyn std::fmt::Display| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{}: {e}", path.display()),
        )
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(cert, &e))?;
    if certs.is_empty() {
        return Err(bad(cert, &"no PEM certificate in it"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| bad(cert, &e))?;
    Ok(pgwire::tokio::TlsAcceptor::from(Arc::new(config)))
}

struct Handlers(Arc<Shared>);

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::new(Queries(self.0.clone()))
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::new(Queries(self.0.clone()))
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(Startup {
            shared: self.0.clone(),
            pids: RandomPidSecretKeyGenerator::default(),
        })
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::new(Cancel(self.0.clone()))
    }
}

/// The cancel signals of the open connections.
#[derive(Default)]
struct Cancels(std::sync::Mutex<std::collections::HashMap<(i32, Vec<u8>), CancelSender>>);

type CancelSender = Arc<tokio::sync::watch::Sender<u64>>;

/// A connection's cancel signal, in its session extensions; unregistered when it closes.
struct CancelSignal {
    signal: CancelSender,
    key: (i32, Vec<u8>),
    cancels: Arc<Cancels>,
}

impl Drop for CancelSignal {
    fn drop(&mut self) {
        let mut map = self.cancels.0.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&self.key);
    }
}

/// The receiver a statement's rows watch: it changes when the client cancels.
fn cancel_receiver<C: ClientInfo + ?Sized>(
    client: &C,
) -> Option<tokio::sync::watch::Receiver<u64>> {
    client
        .session_extensions()
        .get::<CancelSignal>()
        .map(|c| c.signal.subscribe())
}

/// A cancel request (psql's Ctrl-C, psycopg's `cancel()`, JDBC's `Statement.cancel`): stops
/// the statement being planned (pgwire's own signal) and the rows being streamed (ours).
struct Cancel(Arc<Shared>);

#[async_trait]
impl pgwire::api::cancel::CancelHandler for Cancel {
    async fn on_cancel_request(&self, request: pgwire::messages::cancel::CancelRequest) {
        self.0
            .connections
            .cancel(request.pid, &request.secret_key)
            .await;
        let key = (request.pid, request.secret_key.to_bytes().to_vec());
        let signal = self
            .0
            .cancels
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        if let Some(signal) = signal {
            signal.send_modify(|n| *n += 1);
        }
    }
}

/// Authentication: a cleartext password that is a token of the server, asked for only when
/// the connection needs one (as `/api/sql` needs a bearer token).
struct Startup {
    shared: Arc<Shared>,
    pids: RandomPidSecretKeyGenerator,
}

impl Startup {
    async fn accept<C>(&self, client: &mut C) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (pid, secret) = self.pids.generate(client);
        client.set_pid_and_secret_key(pid, secret.clone());
        let key = (pid, secret.to_bytes().to_vec());
        let (handle, guard) = self.shared.connections.register(pid, secret);
        client.session_extensions().insert(handle);
        client.session_extensions().insert(guard);
        let signal = Arc::new(tokio::sync::watch::channel(0u64).0);
        self.shared
            .cancels
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), signal.clone());
        client.session_extensions().insert(CancelSignal {
            signal,
            key,
            cancels: self.shared.cancels.clone(),
        });
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = SERVER_VERSION.to_string();
        // Clients that look (DBeaver, JDBC's readOnly) know writes are refused.
        parameters.default_transaction_read_only = true;
        parameters.is_superuser = false;
        finish_authentication(client, &parameters).await
    }
}

fn refused(message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_string(),
        "28P01".to_string(),
        message,
    )))
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let peer = Some(client.socket_addr());
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                if self.shared.access.check(peer, None, Scope::Read).is_ok() {
                    return self.accept(client).await;
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client
                    .send(PgWireBackendMessage::Authentication(
                        Authentication::CleartextPassword,
                    ))
                    .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(pwd) => {
                let pwd = pwd.into_password()?;
                let user = LoginInfo::from_client_info(client)
                    .user()
                    .unwrap_or_default()
                    .to_string();
                let bearer = format!("Bearer {}", pwd.password);
                if let Err(denied) = self.shared.access.check(peer, Some(&bearer), Scope::Read) {
                    tracing::info!(?peer, %user, "a Postgres client was refused");
                    return Err(refused(format!(
                        "password authentication failed for user \"{user}\": {} (the password \
                         is a token of `runql serve`)",
                        match &denied {
                            crate::auth::Denied::Unauthenticated(m)
                            | crate::auth::Denied::Forbidden(m) => m.as_str(),
                        }
                    )));
                }
                return self.accept(client).await;
            }
            _ => {}
        }
        Ok(())
    }
}

/// The queries of a connection: its session's, within the server's limits.
struct Queries(Arc<Shared>);

#[async_trait]
impl SimpleQueryHandler for Queries {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let conn = self.0.service(client).await?;
        crate::mlflow::flush_all(&self.0.held).await.map_err(user)?;
        let limits = self.0.limits;
        let service = conn.service.as_ref();
        let responses =
            match within(limits, SimpleQueryHandler::do_query(service, client, query)).await {
                Err(e) if needs_rewrite(&e) => match self.0.rewrite.rewrite(query) {
                    Some(query) => {
                        within(
                            limits,
                            SimpleQueryHandler::do_query(service, client, &query),
                        )
                        .await?
                    }
                    None => return Err(e),
                },
                answered => answered?,
            };
        Ok(responses
            .into_iter()
            .map(|r| bounded(r, limits, cancel_receiver(client)))
            .collect())
    }
}

#[async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = (String, Option<(Statement, LogicalPlan)>);
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::new(Parser(self.0.clone()))
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let conn = self.0.service(client).await?;
        crate::mlflow::flush_all(&self.0.held).await.map_err(user)?;
        let limits = self.0.limits;
        let response = within(
            limits,
            ExtendedQueryHandler::do_query(conn.service.as_ref(), client, portal, max_rows),
        )
        .await?;
        Ok(bounded(response, limits, cancel_receiver(client)))
    }
}

/// Plans statements in the connection's session.
struct Parser(Arc<Shared>);

#[async_trait]
impl QueryParser for Parser {
    type Statement = (String, Option<(Statement, LogicalPlan)>);

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let conn = self.0.service(client).await?;
        let parser = ExtendedQueryHandler::query_parser(conn.service.as_ref());
        // A plan DataFusion cannot run fails only when executed: check it here, while the
        // catalog rewrite can still be tried.
        let parsed = within(self.0.limits, parser.parse_sql(client, sql, types))
            .await
            .and_then(|parsed| {
                if let Some((_, Some((_, plan)))) = &parsed {
                    let state = conn.ctx.state();
                    state
                        .analyzer()
                        .execute_and_check(plan.clone(), state.config_options(), |_, _| {})
                        .map_err(user)?;
                }
                Ok(parsed)
            });
        match parsed {
            Err(e) if needs_rewrite(&e) => match self.0.rewrite.rewrite(sql) {
                Some(sql) => within(self.0.limits, parser.parse_sql(client, &sql, types)).await,
                None => Err(e),
            },
            parsed => parsed,
        }
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        ExtendedQueryHandler::query_parser(self.0.planned.as_ref()).get_parameter_types(stmt)
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&pgwire::api::portal::Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        ExtendedQueryHandler::query_parser(self.0.planned.as_ref())
            .get_result_schema(stmt, column_format)
    }
}

/// Whether `e` is DataFusion refusing a correlated subquery, which [`rewrite`] may resolve:
/// a query is rewritten only when it fails as sent.
fn needs_rewrite(e: &PgWireError) -> bool {
    e.to_string().to_lowercase().contains("subquery")
}

fn timed_out(limits: SqlLimits) -> PgWireError {
    error(
        "57014",
        format!(
            "canceling statement: it ran longer than {} s, the server's limit \
             (`runql serve --sql-timeout` raises it)",
            limits.timeout.as_secs()
        ),
    )
}

/// Planning within the time limit.
async fn within<T>(
    limits: SqlLimits,
    work: impl Future<Output = PgWireResult<T>>,
) -> PgWireResult<T> {
    match tokio::time::timeout(limits.timeout, work).await {
        Ok(r) => r.map_err(explain),
        Err(_) => Err(timed_out(limits)),
    }
}

/// DataFusion's errors with the SQLSTATE a Postgres client expects.
fn explain(e: PgWireError) -> PgWireError {
    let PgWireError::ApiError(inner) = &e else {
        return e;
    };
    let text = inner.to_string();
    if text.contains("Resources exhausted") {
        return error(
            "53200",
            format!(
                "{text} (the server's SQL memory limit; `runql serve --sql-memory-mb` raises it)"
            ),
        );
    }
    let code = if text.contains("not found") || text.contains("No field named") {
        "42P01"
    } else if text.contains("SQL error") || text.contains("ParserError") {
        "42601"
    } else {
        "XX000"
    };
    error(code, text)
}

/// A response whose rows stop at the statement's deadline.
fn bounded(
    response: Response,
    limits: SqlLimits,
    cancel: Option<tokio::sync::watch::Receiver<u64>>,
) -> Response {
    match response {
        Response::Query(q) => {
            let command_tag = q.command_tag().to_string();
            let row_schema = q.row_schema();
            let data_rows = q.data_rows;
            let rows = Deadline {
                inner: data_rows,
                stop: Stop::new(limits, cancel),
                done: false,
            }
            .map(|r| r.map_err(explain));
            let mut q = QueryResponse::new(row_schema, rows);
            q.set_command_tag(&command_tag);
            Response::Query(q)
        }
        other => other,
    }
}

/// What ends a statement's rows early: its deadline, or the client's cancel request.
struct Stop {
    sleep: Pin<Box<tokio::time::Sleep>>,
    canceled: Pin<Box<dyn Future<Output = ()> + Send>>,
    limits: SqlLimits,
}

impl Stop {
    fn new(limits: SqlLimits, cancel: Option<tokio::sync::watch::Receiver<u64>>) -> Stop {
        let canceled = async move {
            let canceled = match cancel {
                Some(mut rx) => rx.changed().await.is_ok(),
                None => false,
            };
            // A closed signal (the connection is going) is no cancel.
            if !canceled {
                std::future::pending::<()>().await;
            }
        };
        Stop {
            sleep: Box::pin(tokio::time::sleep(limits.timeout)),
            canceled: Box::pin(canceled),
            limits,
        }
    }

    /// The error that stops the statement, once one of them happened.
    fn poll(&mut self, cx: &mut Context<'_>) -> Option<PgWireError> {
        if self.sleep.as_mut().poll(cx).is_ready() {
            return Some(timed_out(self.limits));
        }
        if self.canceled.as_mut().poll(cx).is_ready() {
            return Some(error("57014", "canceling statement due to user request"));
        }
        None
    }
}

/// A row stream that ends with a 57014 error at its deadline or on cancel (dropping the query
/// under it).
struct Deadline<S> {
    inner: S,
    stop: Stop,
    done: bool,
}

impl<S: Stream<Item = PgWireResult<DataRow>> + Unpin> Stream for Deadline<S> {
    type Item = PgWireResult<DataRow>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(e) = self.stop.poll(cx) {
            self.done = true;
            return Poll::Ready(Some(Err(e)));
        }
        self.inner.poll_next_unpin(cx)
    }
}

/// Refuses every statement but queries, `EXPLAIN`, `SET`/`SHOW`, cursors and transactions.
struct ReadOnly;

fn read_only(statement: &Statement) -> Option<PgWireError> {
    use Statement as S;
    let allowed = matches!(
        statement,
        S::Query(_)
            | S::Explain { .. }
            | S::ExplainTable { .. }
            | S::Set(_)
            | S::ShowVariable { .. }
            | S::ShowVariables { .. }
            | S::ShowTables { .. }
            | S::ShowColumns { .. }
            | S::ShowFunctions { .. }
            | S::ShowStatus { .. }
            | S::StartTransaction { .. }
            | S::Commit { .. }
            | S::Rollback { .. }
            | S::Declare { .. }
            | S::Fetch { .. }
            | S::Close { .. }
            | S::Discard { .. }
            | S::Deallocate { .. }
            | S::Savepoint { .. }
            | S::ReleaseSavepoint { .. }
    ) || matches!(
        statement,
        S::Copy {
            source: CopySource::Query(_),
            to: true,
            target: CopyTarget::Stdout,
            ..
        }
    );
    if allowed {
        return None;
    }
    let text = statement.to_string();
    let kind: String = text
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase();
    Some(error(
        "25006",
        format!(
            "runql's Postgres endpoint is read-only: {kind} is refused (queries, EXPLAIN, \
             SET/SHOW, cursors and COPY (query) TO STDOUT run; runs are written by the \
             clients that log them)"
        ),
    ))
}

/// `SAVEPOINT`, `RELEASE`, `ROLLBACK TO`: nothing is written, so there is nothing to undo;
/// answered so that clients which wrap each statement in a savepoint (psycopg's nested
/// `transaction()`, SQLAlchemy) work.
fn savepoint(statement: &Statement) -> Option<PgWireResult<Response>> {
    let tag = match statement {
        Statement::Savepoint { .. } => "SAVEPOINT",
        Statement::ReleaseSavepoint { .. } => "RELEASE",
        Statement::Rollback {
            savepoint: Some(_), ..
        } => "ROLLBACK",
        _ => return None,
    };
    Some(Ok(Response::Execution(pgwire::api::results::Tag::new(tag))))
}

#[async_trait]
impl QueryHook for ReadOnly {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        read_only(statement)
            .map(Err)
            .or_else(|| savepoint(statement))
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        if let Some(e) = read_only(statement) {
            return Some(Err(e));
        }
        if matches!(statement, Statement::Copy { .. }) {
            return Some(Err(error(
                "0A000",
                "COPY runs as a simple query (psql's \\copy, psycopg's cursor.copy)",
            )));
        }
        let _answered_later = savepoint(statement)?;
        Some(
            datafusion::common::DFSchema::try_from(datafusion::arrow::datatypes::Schema::empty())
                .map(|schema| {
                    LogicalPlan::EmptyRelation(datafusion::logical_expr::EmptyRelation {
                        produce_one_row: false,
                        schema: Arc::new(schema),
                    })
                })
                .map_err(user),
        )
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        savepoint(statement)
    }
}

/// DataFusion's own settings: `SHOW datafusion.execution.batch_size`, `SHOW ALL` (what this
/// connection has set, else the default), and the refusal of `SET datafusion.runtime.*` (the
/// memory and spill settings the server's limits are made of).
struct Settings;

/// The settings `SHOW name` asks for, if they are DataFusion's: (name, value, description).
fn settings(statement: &Statement, ctx: &SessionContext) -> Option<Vec<[String; 3]>> {
    let Statement::ShowVariable { variable } = statement else {
        return None;
    };
    let name = variable
        .iter()
        .map(|v| v.value.to_lowercase())
        .collect::<Vec<_>>()
        .join(".");
    let all = name == "all";
    if !all && !name.starts_with("datafusion.") {
        return None;
    }
    let rows = ctx
        .state()
        .config_options()
        .entries()
        .into_iter()
        .filter(|e| all || e.key == name)
        .map(|e| {
            [
                e.key,
                e.value.unwrap_or_default(),
                e.description.to_string(),
            ]
        })
        .collect();
    Some(rows)
}

fn settings_fields(statement: &Statement, all: bool) -> Vec<FieldInfo> {
    let names: Vec<String> = if all {
        vec!["name".into(), "setting".into(), "description".into()]
    } else {
        let Statement::ShowVariable { variable } = statement else {
            return Vec::new();
        };
        let name = variable
            .iter()
            .map(|v| v.value.to_lowercase())
            .collect::<Vec<_>>();
        vec![name.last().cloned().unwrap_or_default()]
    };
    names
        .into_iter()
        .map(|n| {
            FieldInfo::new(
                n,
                None,
                None,
                Type::VARCHAR,
                pgwire::api::results::FieldFormat::Text,
            )
        })
        .collect()
}

fn is_show_all(statement: &Statement) -> bool {
    matches!(statement, Statement::ShowVariable { variable }
        if variable.len() == 1 && variable[0].value.eq_ignore_ascii_case("all"))
}

/// `SET datafusion.runtime.…`: refused, the server's memory limit is not the client's to lift.
fn refused_setting(statement: &Statement) -> Option<PgWireError> {
    let Statement::Set(set) = statement else {
        return None;
    };
    let text = set.to_string().to_lowercase();
    let name = text.strip_prefix("set ")?.trim_start();
    let name = name.strip_prefix("session ").unwrap_or(name);
    let name = name.strip_prefix("local ").unwrap_or(name);
    name.starts_with("datafusion.runtime.").then(|| {
        error(
            "42501",
            format!(
                "`{}` is the server's to set: the memory and spill limits of every \
                 connection are `runql serve --sql-memory-mb`",
                name.split(|c: char| c.is_whitespace() || c == '=')
                    .next()
                    .unwrap_or(name)
            ),
        )
    })
}

fn settings_response(
    statement: &Statement,
    ctx: &SessionContext,
) -> Option<PgWireResult<Response>> {
    if let Some(e) = refused_setting(statement) {
        return Some(Err(e));
    }
    let rows = settings(statement, ctx)?;
    let all = is_show_all(statement);
    if rows.is_empty() {
        return Some(Err(error(
            "42704",
            format!(
                "unrecognized configuration parameter \"{}\"",
                statement.to_string().trim_start_matches("SHOW ")
            ),
        )));
    }
    let fields = Arc::new(settings_fields(statement, all));
    let encoded: Vec<PgWireResult<DataRow>> = rows
        .into_iter()
        .map(|[name, value, description]| {
            let mut row = pgwire::api::results::DataRowEncoder::new(fields.clone());
            if all {
                row.encode_field(&Some(name))?;
                row.encode_field(&Some(value))?;
                row.encode_field(&Some(description))?;
            } else {
                row.encode_field(&Some(value))?;
            }
            Ok(row.take_row())
        })
        .collect();
    Some(Ok(Response::Query(QueryResponse::new(
        fields,
        futures::stream::iter(encoded),
    ))))
}

#[async_trait]
impl QueryHook for Settings {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        settings_response(statement, ctx)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        if let Some(e) = refused_setting(statement) {
            return Some(Err(e));
        }
        settings(statement, ctx)?;
        let fields: Vec<datafusion::arrow::datatypes::Field> =
            settings_fields(statement, is_show_all(statement))
                .iter()
                .map(|f| datafusion::arrow::datatypes::Field::new(f.name(), DataType::Utf8, false))
                .collect();
        let schema = datafusion::arrow::datatypes::Schema::new(fields);
        Some(
            datafusion::common::DFSchema::try_from(schema)
                .map(|schema| {
                    LogicalPlan::EmptyRelation(datafusion::logical_expr::EmptyRelation {
                        produce_one_row: true,
                        schema: Arc::new(schema),
                    })
                })
                .map_err(user),
        )
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        settings_response(statement, ctx)
    }
}

/// `COPY (query) TO STDOUT [WITH (FORMAT text|csv, HEADER, DELIMITER 'c', NULL 's')]`.
struct CopyOut {
    limits: SqlLimits,
}

#[derive(Debug, Clone)]
struct CopyFormat {
    csv: bool,
    header: bool,
    delimiter: char,
    null: String,
}

fn copy_format(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> PgWireResult<CopyFormat> {
    let mut f = CopyFormat {
        csv: false,
        header: false,
        delimiter: '\t',
        null: "\\N".into(),
    };
    let mut delimiter = None;
    let mut null = None;
    for o in options {
        match o {
            CopyOption::Format(name) => match name.value.to_ascii_lowercase().as_str() {
                "csv" => f.csv = true,
                "text" => f.csv = false,
                other => {
                    return Err(error(
                        "0A000",
                        format!("COPY format {other} is not served: text or csv"),
                    ));
                }
            },
            CopyOption::Header(h) => f.header = *h,
            CopyOption::Delimiter(c) => delimiter = Some(*c),
            CopyOption::Null(s) => null = Some(s.clone()),
            other => {
                return Err(error("0A000", format!("COPY option {other} is not served")));
            }
        }
    }
    for o in legacy {
        match o {
            CopyLegacyOption::Csv(opts) => {
                f.csv = true;
                for c in opts {
                    if let CopyLegacyCsvOption::Header = c {
                        f.header = true;
                    }
                }
            }
            CopyLegacyOption::Delimiter(c) => delimiter = Some(*c),
            CopyLegacyOption::Null(s) => null = Some(s.clone()),
            other => {
                return Err(error("0A000", format!("COPY option {other} is not served")));
            }
        }
    }
    if f.csv {
        f.delimiter = ',';
        f.null = String::new();
    }
    if let Some(d) = delimiter {
        f.delimiter = d;
    }
    if let Some(n) = null {
        f.null = n;
    }
    Ok(f)
}

/// The rows of a batch as COPY lines, one `CopyData` message each.
fn copy_lines(batch: &RecordBatch, f: &CopyFormat) -> PgWireResult<Vec<CopyData>> {
    let columns: Vec<_> = batch
        .columns()
        .iter()
        .map(|c| datafusion::arrow::compute::cast(c, &DataType::Utf8).map_err(user))
        .collect::<PgWireResult<_>>()?;
    let strings: Vec<&datafusion::arrow::array::StringArray> = columns
        .iter()
        .map(|c| {
            c.as_any()
                .downcast_ref::<datafusion::arrow::array::StringArray>()
                .ok_or_else(|| user("a COPY column did not turn into text"))
        })
        .collect::<PgWireResult<_>>()?;
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let mut line = String::new();
        for (i, col) in strings.iter().enumerate() {
            if i > 0 {
                line.push(f.delimiter);
            }
            if col.is_null(row) {
                line.push_str(&f.null);
            } else {
                copy_field(&mut line, col.value(row), f);
            }
        }
        line.push('\n');
        out.push(CopyData::new(bytes::Bytes::from(line)));
    }
    Ok(out)
}

fn copy_field(line: &mut String, v: &str, f: &CopyFormat) {
    if f.csv {
        let quote = v.is_empty() && !f.null.is_empty()
            || v == f.null
            || v.contains([f.delimiter, '"', '\n', '\r']);
        if quote {
            line.push('"');
            line.push_str(&v.replace('"', "\"\""));
            line.push('"');
        } else {
            line.push_str(v);
        }
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => line.push_str("\\\\"),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\t' if f.delimiter == '\t' => line.push_str("\\t"),
            c if c == f.delimiter => {
                line.push('\\');
                line.push(c);
            }
            c => line.push(c),
        }
    }
}

fn header_line(schema: &SchemaRef, f: &CopyFormat) -> CopyData {
    let mut line = String::new();
    for (i, field) in schema.fields().iter().enumerate() {
        if i > 0 {
            line.push(f.delimiter);
        }
        copy_field(&mut line, field.name(), f);
    }
    line.push('\n');
    CopyData::new(bytes::Bytes::from(line))
}

#[async_trait]
impl QueryHook for CopyOut {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let cancel = cancel_receiver(&*client);
        let Statement::Copy {
            source: CopySource::Query(query),
            to: true,
            target: CopyTarget::Stdout,
            options,
            legacy_options,
            ..
        } = statement
        else {
            return None;
        };
        let limits = self.limits;
        Some(
            async move {
                let format = copy_format(options, legacy_options)?;
                let df = ctx
                    .sql(&query.to_string())
                    .await
                    .map_err(|e| explain(PgWireError::ApiError(Box::new(e))))?;
                let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
                let columns = schema.fields().len();
                let batches = df
                    .execute_stream()
                    .await
                    .map_err(|e| explain(PgWireError::ApiError(Box::new(e))))?;
                let header = format
                    .header
                    .then(|| Ok(header_line(&schema, &format)))
                    .into_iter();
                let f = format.clone();
                let lines = batches.flat_map(move |b| {
                    let lines = match b {
                        Ok(b) => copy_lines(&b, &f),
                        Err(e) => Err(explain(PgWireError::ApiError(Box::new(e)))),
                    };
                    futures::stream::iter(match lines {
                        Ok(lines) => lines.into_iter().map(Ok).collect::<Vec<_>>(),
                        Err(e) => vec![Err(e)],
                    })
                });
                let data = futures::stream::iter(header).chain(lines);
                let data = CopyDeadline {
                    inner: Box::pin(data),
                    stop: Stop::new(limits, cancel),
                    done: false,
                };
                Ok(Response::CopyOut(CopyResponse::new(0, columns, data)))
            }
            .await,
        )
    }

    async fn handle_extended_parse_query(
        &self,
        _statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        None
    }

    async fn handle_extended_query(
        &self,
        _statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        None
    }
}

/// COPY data that ends with a 57014 error at the statement's deadline or on cancel.
struct CopyDeadline {
    inner: Pin<Box<dyn Stream<Item = PgWireResult<CopyData>> + Send>>,
    stop: Stop,
    done: bool,
}

impl Stream for CopyDeadline {
    type Item = PgWireResult<CopyData>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(e) = self.stop.poll(cx) {
            self.done = true;
            return Poll::Ready(Some(Err(e)));
        }
        self.inner.as_mut().poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![
                    Some("a\tb\\c"),
                    None,
                    Some("x,\"y\""),
                ])),
                Arc::new(Int64Array::from(vec![Some(1), Some(2), None])),
            ],
        )
        .unwrap()
    }

    fn text(lines: Vec<CopyData>) -> String {
        lines
            .iter()
            .map(|l| String::from_utf8(l.data.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn copy_text_escapes_as_postgres_does() {
        let f = copy_format(&[], &[]).unwrap();
        assert_eq!(
            text(copy_lines(&batch(), &f).unwrap()),
            "a\\tb\\\\c\t1\n\\N\t2\nx,\"y\"\t\\N\n"
        );
    }

    #[test]
    fn copy_csv_quotes_as_postgres_does() {
        let f = copy_format(
            &[
                CopyOption::Format(datafusion::sql::sqlparser::ast::Ident::new("csv")),
                CopyOption::Header(true),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            text(copy_lines(&batch(), &f).unwrap()),
            "a\tb\\c,1\n,2\n\"x,\"\"y\"\"\",\n"
        );
        assert_eq!(
            String::from_utf8(header_line(&batch().schema(), &f).data.to_vec()).unwrap(),
            "k,v\n"
        );
    }

    #[test]
    fn writes_are_refused_with_sqlstate_25006() {
        let parse = |sql: &str| {
            datafusion::sql::sqlparser::parser::Parser::parse_sql(
                &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
                sql,
            )
            .ok()
            .and_then(|mut s| s.pop())
        };
        for sql in [
            "CREATE TABLE t (a int)",
            "INSERT INTO runs VALUES (1)",
            "DROP TABLE runs",
            "COPY runs FROM STDIN",
            "COPY (SELECT 1) TO '/tmp/x.csv'",
            "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
        ] {
            // (What the Postgres dialect cannot parse is refused before the hook.)
            let Some(statement) = parse(sql) else {
                continue;
            };
            let e = read_only(&statement).unwrap_or_else(|| panic!("{sql} was not refused"));
            let PgWireError::UserError(info) = e else {
                panic!("{sql}: not a user error")
            };
            assert_eq!(info.code, "25006", "{sql}");
        }
        for sql in [
            "SELECT 1",
            "SET search_path = public",
            "SHOW ALL",
            "BEGIN",
            "COPY (SELECT 1) TO STDOUT",
        ] {
            assert!(
                read_only(&parse(sql).unwrap()).is_none(),
                "{sql} was refused"
            );
        }
    }
}
