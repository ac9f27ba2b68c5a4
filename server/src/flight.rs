//! Arrow Flight SQL (`runql serve --flight-port`): ADBC drivers (Python, Go, Java, R), the
//! Flight SQL JDBC driver and DBeaver read query answers as Arrow record batches, with no
//! conversion to rows and back.
//!
//! The protocol is arrow-flight's Flight SQL server; runql adds what `/api/sql` has around it:
//!
//! - **Auth**: `Authorization: Bearer TOKEN` on each call, or a handshake with basic auth
//!   whose password is a token (answered with the bearer header the client then sends);
//!   without tokens only clients on this machine are answered.
//! - **A session per statement**: nothing one call sets or prepares touches another's; a
//!   prepared statement's handle carries its SQL and bound parameters, so the server keeps
//!   no state between calls.
//! - **Read-only**: statements that would change something are refused (PERMISSION_DENIED);
//!   updates, ingestion and transactions are not offered.
//! - **Limits**: each statement stops at the server's SQL time limit (DEADLINE_EXCEEDED) and
//!   its operators get the server's SQL memory limit (RESOURCE_EXHAUSTED when exceeded).
//! - Queries see everything the server has acknowledged (held runs are flushed first), and
//!   run on the server's query threads.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandStatementQuery, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    IpcMessage, SchemaAsIpc, Ticket,
};
use base64::Engine as _;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::dataframe::DataFrame;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use runql_query::Engine;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Access, Denied, Scope};
use crate::sql::SqlLimits;

/// Where a Flight SQL endpoint listens, and with which certificate.
#[derive(Debug, Clone)]
pub struct FlightOptions {
    /// The address to listen on (port 0: any free one).
    pub addr: SocketAddr,
    /// A PEM certificate chain and key: with them the endpoint speaks TLS only (`grpc+tls://`).
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// A listening Flight SQL endpoint; it stops accepting when dropped.
#[derive(Debug)]
pub struct FlightSqlEndpoint {
    addr: SocketAddr,
    serve: tokio::task::JoinHandle<()>,
}

impl FlightSqlEndpoint {
    /// The address bound (the port chosen when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for FlightSqlEndpoint {
    fn drop(&mut self) {
        self.serve.abort();
    }
}

/// The Flight SQL service.
struct Service {
    engine: Engine,
    limits: SqlLimits,
    access: Access,
    held: crate::mlflow::State,
    info: SqlInfoData,
}

/// Starts the endpoint: binds `options.addr` and serves on the server's query threads.
pub(crate) async fn start(
    state: &crate::state::AppState,
    options: &FlightOptions,
) -> std::io::Result<FlightSqlEndpoint> {
    let mut builder = tonic::transport::Server::builder();
    if let Some((cert, key)) = &options.tls {
        let read = |p: &Path, what: &str| {
            std::fs::read(p).map_err(|e| {
                std::io::Error::new(e.kind(), format!("the TLS {what} {}: {e}", p.display()))
            })
        };
        let identity =
            tonic::transport::Identity::from_pem(read(cert, "certificate")?, read(key, "key")?);
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| {
                std::io::Error::other(format!(
                    "the TLS certificate {} or key {}: {e}",
                    cert.display(),
                    key.display()
                ))
            })?;
    }
    let service = Service {
        engine: state.sql.engine.clone(),
        limits: state.sql.limits,
        access: state.gate.access.clone(),
        held: state.mlflow.clone(),
        info: sql_info().map_err(std::io::Error::other)?,
    };
    let runtime = state
        .sql
        .runtime_handle()
        .ok_or_else(|| std::io::Error::other("the query threads are gone"))?;
    let listener = std::net::TcpListener::bind(options.addr)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let serve = runtime.spawn(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "the Flight SQL endpoint cannot listen");
                return;
            }
        };
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let server = FlightServiceServer::new(service)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        if let Err(e) = builder
            .add_service(server)
            .serve_with_incoming(incoming)
            .await
        {
            tracing::error!(error = %e, "the Flight SQL endpoint stopped");
        }
    });
    Ok(FlightSqlEndpoint { addr, serve })
}

/// What `CommandGetSqlInfo` answers.
fn sql_info() -> Result<SqlInfoData, FlightError> {
    let mut info = SqlInfoDataBuilder::new();
    info.append(SqlInfo::FlightSqlServerName, "runql");
    info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    info.append(SqlInfo::FlightSqlServerArrowVersion, arrow::ARROW_VERSION);
    info.append(SqlInfo::FlightSqlServerReadOnly, true);
    info.append(SqlInfo::FlightSqlServerSql, true);
    info.append(SqlInfo::FlightSqlServerSubstrait, false);
    info.append(SqlInfo::FlightSqlServerTransaction, 0i32);
    info.append(SqlInfo::FlightSqlServerCancel, false);
    info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    info.build()
}

fn denied(d: Denied) -> Status {
    match d {
        Denied::Unauthenticated(m) => Status::unauthenticated(m),
        Denied::Forbidden(m) => Status::permission_denied(m),
    }
}

/// A query error as a gRPC status: who is at fault, in the status code; what to do, in its
/// message.
fn query_status(e: runql_query::Error) -> Status {
    let message = e.to_string();
    match &e {
        runql_query::Error::ReadOnly { .. } | runql_query::Error::SessionStatement { .. } => {
            Status::permission_denied(message)
        }
        _ if message.contains("Resources exhausted") => Status::resource_exhausted(format!(
            "{message} (the server's SQL memory limit; `runql serve --sql-memory-mb` raises it)"
        )),
        _ if e.is_internal() => Status::internal(message),
        _ => Status::invalid_argument(message),
    }
}

fn timed_out(limits: SqlLimits) -> Status {
    Status::deadline_exceeded(format!(
        "the query ran longer than {} s, the server's limit (`runql serve --sql-timeout` \
         raises it)",
        limits.timeout.as_secs()
    ))
}

/// A prepared statement's handle: its SQL and, once bound, its parameters (one row, as an
/// Arrow IPC stream). The server keeps nothing between calls.
struct Handle {
    sql: String,
    params: Option<RecordBatch>,
}

const HANDLE_MAGIC: &[u8] = b"runql-prepared-1\n";

impl Handle {
    fn encode(&self) -> Result<Vec<u8>, Status> {
        let mut out = HANDLE_MAGIC.to_vec();
        out.extend_from_slice(&(self.sql.len() as u64).to_le_bytes());
        out.extend_from_slice(self.sql.as_bytes());
        if let Some(batch) = &self.params {
            let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut out, &batch.schema())
                .map_err(|e| Status::internal(e.to_string()))?;
            writer
                .write(batch)
                .and_then(|_| writer.finish())
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        Ok(out)
    }

    fn decode(bytes: &[u8]) -> Result<Handle, Status> {
        let bad = || {
            Status::invalid_argument(
                "not a prepared statement handle of this server: prepare the statement again",
            )
        };
        let rest = bytes.strip_prefix(HANDLE_MAGIC).ok_or_else(bad)?;
        let (len, rest) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
        let len = usize::try_from(u64::from_le_bytes(*len)).map_err(|_| bad())?;
        if rest.len() < len {
            return Err(bad());
        }
        let (sql, rest) = rest.split_at(len);
        let sql = String::from_utf8(sql.to_vec()).map_err(|_| bad())?;
        let params = if rest.is_empty() {
            None
        } else {
            let mut reader =
                arrow::ipc::reader::StreamReader::try_new(rest, None).map_err(|_| bad())?;
            Some(reader.next().ok_or_else(bad)?.map_err(|_| bad())?)
        };
        Ok(Handle { sql, params })
    }

    /// The bound parameters, `$1`, `$2`… in column order.
    fn param_values(&self) -> Result<Option<ParamValues>, Status> {
        let Some(batch) = &self.params else {
            return Ok(None);
        };
        let values = batch
            .columns()
            .iter()
            .map(|c| ScalarValue::try_from_array(c, 0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Status::invalid_argument(format!("a bound parameter: {e}")))?;
        Ok(Some(ParamValues::from(values)))
    }
}

/// `sql` with JDBC/ODBC-style `?` placeholders numbered `$1`, `$2`… (what DataFusion binds),
/// or `None` when it has none. Strings, identifiers and comments are left as they are.
fn numbered_placeholders(sql: &str) -> Option<String> {
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    if !sql.contains('?') {
        return None;
    }
    let dialect = datafusion::sql::sqlparser::dialect::GenericDialect {};
    let tokens = Tokenizer::new(&dialect, sql).tokenize().ok()?;
    let mut n = 0;
    let mut changed = false;
    let text: String = tokens
        .into_iter()
        .map(|t| match t {
            Token::Placeholder(p) if p == "?" => {
                n += 1;
                changed = true;
                format!("${n}")
            }
            t => t.to_string(),
        })
        .collect();
    changed.then_some(text)
}

type DoGetStream = Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send>>;

impl Service {
    /// Refuses a call whose credentials do not allow reading.
    fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|v| {
                v.to_str()
                    .map_err(|_| Status::unauthenticated("the authorization header is not text"))
            })
            .transpose()?;
        self.access
            .check(request.remote_addr(), authorization, Scope::Read)
            .map_err(denied)
    }

    /// Plans `sql` in a session of its own, within the time limit.
    async fn plan(&self, sql: &str, params: Option<ParamValues>) -> Result<DataFrame, Status> {
        let numbered = numbered_placeholders(sql);
        let sql = numbered.as_deref().unwrap_or(sql);
        let limits = self.limits;
        let work = async {
            crate::mlflow::flush_all(&self.held)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            let session = self
                .engine
                .session(Some(limits.memory))
                .map_err(query_status)?;
            if sql.to_ascii_lowercase().contains("information_schema") {
                session.refresh_tables().await.map_err(query_status)?;
            }
            let df = match session.sql(sql).await {
                Err(e) if e.is_missing_table() => {
                    session.refresh_tables().await.map_err(query_status)?;
                    session.sql(sql).await
                }
                r => r,
            }
            .map_err(query_status)?;
            match params {
                Some(p) => df
                    .with_param_values(p)
                    .map_err(|e| query_status(runql_query::Error::from(e))),
                None => Ok(df),
            }
        };
        tokio::time::timeout(limits.timeout, work)
            .await
            .map_err(|_| timed_out(limits))?
    }

    /// Runs a planned query as a stream of Flight data, stopped at the time limit.
    async fn run(&self, df: DataFrame) -> Result<Response<DoGetStream>, Status> {
        let limits = self.limits;
        let deadline = tokio::time::Instant::now() + limits.timeout;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = tokio::time::timeout_at(deadline, df.execute_stream())
            .await
            .map_err(|_| timed_out(limits))?
            .map_err(|e| query_status(runql_query::Error::from(e)))?;
        let batches = futures::stream::unfold((batches, false), move |(mut s, done)| async move {
            if done {
                return None;
            }
            match tokio::time::timeout_at(deadline, s.next()).await {
                Ok(Some(Ok(batch))) => Some((Ok(batch), (s, false))),
                Ok(Some(Err(e))) => Some((
                    Err(FlightError::Tonic(Box::new(query_status(
                        runql_query::Error::from(e),
                    )))),
                    (s, true),
                )),
                Ok(None) => None,
                Err(_) => Some((
                    Err(FlightError::Tonic(Box::new(timed_out(limits)))),
                    (s, true),
                )),
            }
        });
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from);
        Ok(Response::new(Box::pin(stream)))
    }

    /// A FlightInfo of one endpoint whose ticket is `ticket`, answering `schema`.
    fn info(
        &self,
        schema: &Schema,
        ticket: Vec<u8>,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket));
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_endpoint(endpoint)
            .with_descriptor(descriptor);
        Ok(Response::new(info))
    }

    /// One batch, as a do_get answer.
    fn one(schema: SchemaRef, batch: Result<RecordBatch, FlightError>) -> DoGetStream {
        Box::pin(
            FlightDataEncoderBuilder::new()
                .with_schema(schema)
                .build(futures::stream::once(async { batch }))
                .map_err(Status::from),
        )
    }

    /// The store's tables (and views): (schema, table, type, columns), the plugins' included.
    async fn tables(&self) -> Result<Vec<(String, String, &'static str, SchemaRef)>, Status> {
        let session = self.engine.session(None).map_err(query_status)?;
        session.refresh_tables().await.map_err(query_status)?;
        let catalog = session
            .context()
            .catalog(runql_query::CATALOG)
            .ok_or_else(|| Status::internal("the catalog is missing"))?;
        let mut out = Vec::new();
        for schema_name in catalog.schema_names() {
            let Some(schema) = catalog.schema(&schema_name) else {
                continue;
            };
            for table in schema.table_names() {
                if let Ok(Some(provider)) = schema.table(&table).await {
                    let kind = match provider.table_type() {
                        datafusion::datasource::TableType::View => "VIEW",
                        datafusion::datasource::TableType::Temporary => "LOCAL TEMPORARY",
                        datafusion::datasource::TableType::Base => "TABLE",
                    };
                    out.push((schema_name.clone(), table, kind, provider.schema()));
                }
            }
        }
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        Ok(out)
    }

    fn schema_ipc(schema: &Schema) -> Result<bytes::Bytes, Status> {
        let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
            .try_into()
            .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
        Ok(bytes)
    }
}

#[tonic::async_trait]
impl FlightSqlService for Service {
    type FlightService = Service;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        // Basic auth whose password is a token: answered with the bearer header the client
        // sends from then on. A bearer header, or none on an open server, is checked as is.
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let token = match header.as_deref().and_then(|h| h.split_once(' ')) {
            Some((scheme, encoded)) if scheme.eq_ignore_ascii_case("basic") => {
                // Padded or not (the Go driver under ADBC leaves the padding out).
                let base64 = base64::engine::GeneralPurpose::new(
                    &base64::alphabet::STANDARD,
                    base64::engine::GeneralPurposeConfig::new()
                        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
                );
                let decoded = base64
                    .decode(encoded.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        Status::invalid_argument("the basic authorization header is not base64")
                    })?;
                let (_user, password) = decoded.split_once(':').unwrap_or(("", &decoded));
                Some(password.to_string())
            }
            _ => None,
        };
        let bearer = token.as_ref().map(|t| format!("Bearer {t}"));
        self.access
            .check(
                request.remote_addr(),
                bearer.as_deref().or(header.as_deref()),
                Scope::Read,
            )
            .map_err(denied)?;
        let payload = token.clone().unwrap_or_default().into_bytes();
        let answer = futures::stream::once(async move {
            Ok(HandshakeResponse {
                protocol_version: 0,
                payload: payload.into(),
            })
        });
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(answer));
        if let Some(bearer) = bearer {
            let value = MetadataValue::try_from(bearer)
                .map_err(|_| Status::invalid_argument("the token is not a header value"))?;
            response.metadata_mut().insert("authorization", value);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.check(&request)?;
        let df = self.plan(&query.query, None).await?;
        let ticket = TicketStatementQuery {
            statement_handle: query.query.into_bytes().into(),
        };
        self.info(
            df.schema().as_arrow(),
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.check(&request)?;
        let sql = String::from_utf8(ticket.statement_handle.to_vec())
            .map_err(|_| Status::invalid_argument("the ticket is not this server's"))?;
        let df = self.plan(&sql, None).await?;
        self.run(df).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        self.check(&request)?;
        let df = self.plan(&query.query, None).await?;
        let mut params: Vec<(usize, Field)> = df
            .logical_plan()
            .get_parameter_types()
            .map_err(|e| query_status(runql_query::Error::from(e)))?
            .into_iter()
            .map(|(name, ty)| {
                let n = name
                    .trim_start_matches('$')
                    .parse::<usize>()
                    .unwrap_or(usize::MAX);
                (n, Field::new(name, ty.unwrap_or(DataType::Null), true))
            })
            .collect();
        params.sort_by_key(|(n, _)| *n);
        let parameter_schema = Schema::new(params.into_iter().map(|(_, f)| f).collect::<Vec<_>>());
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: Handle {
                sql: query.query,
                params: None,
            }
            .encode()?
            .into(),
            dataset_schema: Self::schema_ipc(df.schema().as_arrow())?,
            parameter_schema: Self::schema_ipc(&parameter_schema)?,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        self.check(&request)?;
        let mut handle = Handle::decode(&query.prepared_statement_handle)?;
        let data = request.into_inner().map_err(FlightError::from);
        let batches: Vec<RecordBatch> =
            arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(data)
                .try_collect()
                .await
                .map_err(|e| Status::invalid_argument(format!("the bound parameters: {e}")))?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        handle.params = match rows {
            0 => None,
            1 => batches.into_iter().find(|b| b.num_rows() == 1),
            n => {
                return Err(Status::invalid_argument(format!(
                    "{n} rows of parameters were bound: a query takes one row (run it once \
                     per row)"
                )));
            }
        };
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle.encode()?.into()),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.check(&request)?;
        let handle = Handle::decode(&cmd.prepared_statement_handle)?;
        let df = self.plan(&handle.sql, handle.param_values()?).await?;
        self.info(
            df.schema().as_arrow(),
            cmd.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.check(&request)?;
        let handle = Handle::decode(&cmd.prepared_statement_handle)?;
        let df = self.plan(&handle.sql, handle.param_values()?).await?;
        self.run(df).await
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        // Nothing is kept for a prepared statement: its handle is all of it.
        self.check(&request)
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.check(&request)?;
        let schema = query.into_builder().schema();
        self.info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.check(&request)?;
        let mut builder = query.into_builder();
        builder.append(runql_query::CATALOG);
        let schema = builder.schema();
        Ok(Response::new(Self::one(schema, builder.build())))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.check(&request)?;
        let schema = query.clone().into_builder().schema();
        self.info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.check(&request)?;
        let mut schemas: Vec<String> = self.tables().await?.into_iter().map(|t| t.0).collect();
        schemas.dedup();
        let mut builder = query.into_builder();
        for schema in schemas {
            builder.append(runql_query::CATALOG, schema);
        }
        let schema = builder.schema();
        Ok(Response::new(Self::one(schema, builder.build())))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.check(&request)?;
        let schema = query.clone().into_builder().schema();
        self.info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.check(&request)?;
        let tables = self.tables().await?;
        let mut builder = query.into_builder();
        for (schema, table, kind, columns) in tables {
            builder
                .append(runql_query::CATALOG, schema, table, kind, &columns)
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        let schema = builder.schema();
        Ok(Response::new(Self::one(schema, builder.build())))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.check(&request)?;
        let schema = query.into_builder().schema();
        self.info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.check(&request)?;
        let mut builder = query.into_builder();
        for kind in ["TABLE", "VIEW"] {
            builder.append(kind);
        }
        let schema = builder.schema();
        Ok(Response::new(Self::one(schema, builder.build())))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.check(&request)?;
        let schema = query.clone().into_builder(&self.info).schema();
        self.info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.check(&request)?;
        let builder = query.into_builder(&self.info);
        let schema = builder.schema();
        Ok(Response::new(Self::one(schema, builder.build())))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};

    #[test]
    fn question_marks_are_numbered_outside_strings() {
        assert_eq!(
            numbered_placeholders("SELECT * FROM runs WHERE project = ? AND name <> '?' LIMIT ?")
                .as_deref(),
            Some("SELECT * FROM runs WHERE project = $1 AND name <> '?' LIMIT $2")
        );
        assert_eq!(numbered_placeholders("SELECT '?'"), None);
        assert_eq!(numbered_placeholders("SELECT 1"), None);
    }

    #[test]
    fn a_handle_carries_its_sql_and_parameters() {
        let batch = RecordBatch::try_from_iter([
            ("$1", Arc::new(StringArray::from(vec!["mnist"])) as _),
            ("$2", Arc::new(Int64Array::from(vec![3])) as _),
        ])
        .unwrap();
        let handle = Handle {
            sql: "SELECT * FROM runs WHERE project = $1 LIMIT $2".into(),
            params: Some(batch),
        };
        let back = Handle::decode(&handle.encode().unwrap()).unwrap();
        assert_eq!(back.sql, handle.sql);
        let ParamValues::List(values) = back.param_values().unwrap().unwrap() else {
            panic!("positional parameters");
        };
        assert_eq!(values.len(), 2);
        assert!(Handle::decode(b"SELECT 1").is_err());
        assert!(Handle::decode(&HANDLE_MAGIC[..4]).is_err());
    }
}
