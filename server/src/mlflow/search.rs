//! MLflow's search grammar: filter strings (`metrics.val_loss < 0.5 and params.lr = '0.01'`)
//! and `order_by` clauses, parsed here, and run searches evaluated over a project snapshot's
//! tables — `runs` whole, `metric_summary` / `params` / `tags` pruned to the keys the filter
//! and the order name — as a lookup per run and condition, then MLflow's sort and paging.
//! Experiment and logged-model searches reuse the parsed conditions (`parse_filter`).

use std::collections::{BTreeSet, HashMap};

use arrow::array::RecordBatch;
use runql_core::store::{ProjectSnapshot, f64_column, string_column};
use runql_core::{RunRecord, Scan, Store, Table};

use crate::error::ApiError;

/// One `entity.key op value` condition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Condition {
    entity: Entity,
    key: String,
    op: String,
    value: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entity {
    Metric,
    Param,
    Tag,
    Attribute,
    /// A dataset input's `name`, `digest` or `context`.
    Dataset,
    /// A trace's request metadata (`metadata.<key>`: trace filters only).
    Metadata,
    /// Some span of a trace (`span.name`, `span.attributes.<key>`: trace filters only).
    Span,
    /// A trace's feedback or expectation of a name (trace filters only).
    Feedback,
    Expectation,
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Number(f64),
    Text(String),
    List(Vec<String>),
}

/// A tokenizer for MLflow's filter grammar.
fn tokens(filter: &str) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    let chars: Vec<char> = filter.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' || c == '"' || c == '`' {
            let mut j = i + 1;
            let mut s = String::new();
            while j < chars.len() && chars[j] != c {
                s.push(chars[j]);
                j += 1;
            }
            if j >= chars.len() {
                return Err(ApiError::invalid(format!(
                    "unterminated {c} in filter {filter:?}"
                )));
            }
            out.push(format!("{c}{s}"));
            i = j + 1;
        } else if "<>=!".contains(c) {
            let mut op = c.to_string();
            if chars.get(i + 1) == Some(&'=') {
                op.push('=');
                i += 1;
            }
            out.push(op);
            i += 1;
        } else if c == '(' || c == ')' || c == ',' {
            out.push(c.to_string());
            i += 1;
        } else {
            let mut j = i;
            let mut s = String::new();
            while j < chars.len() && !chars[j].is_whitespace() && !"<>=!(),'\"".contains(chars[j]) {
                // `metrics.`a b`` : a backticked key right after the dot.
                if chars[j] == '`' {
                    break;
                }
                s.push(chars[j]);
                j += 1;
            }
            // A quoted key right after the dot: `metrics."val/acc"`, `metrics.'a b'`,
            // ``metrics.`val/acc` ``.
            if j < chars.len() && "`\"'".contains(chars[j]) && s.ends_with('.') {
                let quote = chars[j];
                let mut k = j + 1;
                let mut key = String::new();
                while k < chars.len() && chars[k] != quote {
                    key.push(chars[k]);
                    k += 1;
                }
                if k >= chars.len() {
                    return Err(ApiError::invalid(format!(
                        "unterminated {quote} in filter {filter:?}"
                    )));
                }
                s.push_str(&key);
                j = k + 1;
            }
            out.push(s);
            i = j.max(i + 1);
        }
    }
    Ok(out)
}

fn unquote(t: &str) -> Option<String> {
    let first = t.chars().next()?;
    ("'\"`".contains(first)).then(|| t[first.len_utf8()..].to_string())
}

/// Parses an MLflow filter string into its `AND`ed conditions (for searches answered without
/// SQL: experiments, logged models).
pub(crate) fn parse_filter(filter: &str) -> Result<Vec<Condition>, ApiError> {
    parse(filter, false)
}

/// [`parse_filter`] for trace searches, which also filter on `metadata.<key>`.
pub(crate) fn parse_trace_filter(filter: &str) -> Result<Vec<Condition>, ApiError> {
    parse(filter, true)
}

impl Condition {
    /// `attributes`, `metrics`, `params` or `tags`.
    pub(crate) fn entity_name(&self) -> &'static str {
        match self.entity {
            Entity::Metric => "metrics",
            Entity::Param => "params",
            Entity::Tag => "tags",
            Entity::Attribute => "attributes",
            Entity::Dataset => "datasets",
            Entity::Metadata => "metadata",
            Entity::Span => "span",
            Entity::Feedback => "feedback",
            Entity::Expectation => "expectation",
        }
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// Whether a value (`None`: absent) satisfies the condition. Numbers compare as numbers
    /// when both sides are numbers; `LIKE` uses SQL's `%` and `_`, `ILIKE` ignores case.
    pub(crate) fn matches(&self, actual: Option<&str>) -> bool {
        match self.op.as_str() {
            "IS NULL" => return actual.is_none(),
            "IS NOT NULL" => return actual.is_some(),
            _ => {}
        }
        let Some(actual) = actual else {
            // MLflow: a missing key matches nothing, `!=` included.
            return false;
        };
        match (&self.value, self.op.as_str()) {
            (Value::List(items), "IN") => items.iter().any(|i| i == actual),
            (Value::List(items), "NOT IN") => !items.iter().any(|i| i == actual),
            (Value::List(_), _) => false,
            (Value::Text(pattern), "LIKE") => like(actual, pattern),
            (Value::Text(pattern), "ILIKE") => {
                like(&actual.to_lowercase(), &pattern.to_lowercase())
            }
            (v, op) => {
                let ord = match (v, actual.parse::<f64>()) {
                    (Value::Number(n), Ok(a)) => a.partial_cmp(n),
                    (Value::Number(n), Err(_)) => Some(actual.cmp(n.to_string().as_str())),
                    (Value::Text(t), _) => Some(actual.cmp(t.as_str())),
                    (Value::List(_), _) => None,
                };
                ord.is_some_and(|ord| holds(op, ord))
            }
        }
    }
}

/// Whether a comparison `op` holds for two values ordered as `ord`.
fn holds(op: &str, ord: std::cmp::Ordering) -> bool {
    match op {
        "=" => ord.is_eq(),
        "!=" => ord.is_ne(),
        "<" => ord.is_lt(),
        "<=" => ord.is_le(),
        ">" => ord.is_gt(),
        ">=" => ord.is_ge(),
        _ => false,
    }
}

/// SQL `LIKE`: `%` any run of characters, `_` one character.
fn like(text: &str, pattern: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    // Classic two-pointer wildcard match with backtracking to the last `%`.
    let (mut ti, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '_' || p[pi] == t[ti]) {
            ti += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == '%' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '%' {
        pi += 1;
    }
    pi == p.len()
}

fn parse(filter: &str, metadata: bool) -> Result<Vec<Condition>, ApiError> {
    let toks = tokens(filter)?;
    let mut out = Vec::new();
    let mut i = 0;
    let bad = |why: &str| ApiError::invalid(format!("Invalid filter {filter:?}: {why}"));
    while i < toks.len() {
        let ident = &toks[i];
        let (entity, key) = match ident.split_once('.') {
            Some((e, k)) => (e.to_lowercase(), k.to_string()),
            None => ("attributes".to_string(), ident.clone()),
        };
        let entity = match entity.as_str() {
            "metrics" | "metric" => Entity::Metric,
            "params" | "param" | "parameter" | "parameters" => Entity::Param,
            "tags" | "tag" => Entity::Tag,
            "attributes" | "attribute" | "attr" | "run" => Entity::Attribute,
            "datasets" | "dataset" => Entity::Dataset,
            "metadata" | "request_metadata" if metadata => Entity::Metadata,
            "trace" if metadata => Entity::Attribute,
            "span" | "spans" if metadata => Entity::Span,
            "feedback" if metadata => Entity::Feedback,
            "expectation" if metadata => Entity::Expectation,
            other => {
                return Err(ApiError::invalid(format!(
                    "Invalid entity type '{other}'. Valid values are ['metric', 'parameter', \
                     'tag', 'attribute', 'dataset']"
                )));
            }
        };
        let key = unquote(&key).unwrap_or(key);
        let op = toks
            .get(i + 1)
            .ok_or_else(|| bad("a comparison is missing"))?
            .to_uppercase();
        i += 2;
        let (op, value) = match op.as_str() {
            "=" | "!=" | "<" | "<=" | ">" | ">=" | "LIKE" | "ILIKE" => {
                let v = toks.get(i).ok_or_else(|| bad("a value is missing"))?;
                i += 1;
                let value = match unquote(v) {
                    Some(s) => Value::Text(s),
                    None => Value::Number(
                        v.parse()
                            .map_err(|_| bad(&format!("{v:?} is not a value")))?,
                    ),
                };
                (op, value)
            }
            "IN" | "NOT" => {
                let op = if op == "NOT" {
                    if toks.get(i).map(|t| t.to_uppercase()) != Some("IN".into()) {
                        return Err(bad("expected NOT IN"));
                    }
                    i += 1;
                    "NOT IN".to_string()
                } else {
                    op
                };
                if toks.get(i).map(String::as_str) != Some("(") {
                    return Err(bad("expected a list in parentheses after IN"));
                }
                i += 1;
                let mut items = Vec::new();
                while let Some(t) = toks.get(i) {
                    i += 1;
                    match t.as_str() {
                        ")" => break,
                        "," => {}
                        v => items.push(unquote(v).unwrap_or_else(|| v.to_string())),
                    }
                }
                (op, Value::List(items))
            }
            "IS" => {
                let not = toks.get(i).map(|t| t.to_uppercase()) == Some("NOT".into());
                if not {
                    i += 1;
                }
                if toks.get(i).map(|t| t.to_uppercase()) != Some("NULL".into()) {
                    return Err(bad("expected IS NULL or IS NOT NULL"));
                }
                i += 1;
                if !matches!(
                    entity,
                    Entity::Param
                        | Entity::Tag
                        | Entity::Metadata
                        | Entity::Feedback
                        | Entity::Expectation
                ) {
                    let kind = match entity {
                        Entity::Metric => "metric",
                        Entity::Dataset => "dataset",
                        Entity::Metadata => "metadata",
                        _ => "attribute",
                    };
                    return Err(ApiError::invalid(format!(
                        "IS NULL / IS NOT NULL is only supported for tags and params, not for \
                         '{kind}' '{key}'"
                    )));
                }
                let op = if not { "IS NOT NULL" } else { "IS NULL" };
                (op.to_string(), Value::Text(String::new()))
            }
            other => return Err(bad(&format!("unknown comparison {other:?}"))),
        };
        if entity == Entity::Dataset && !matches!(key.as_str(), "name" | "digest" | "context") {
            return Err(ApiError::invalid(format!(
                "Invalid dataset key '{key}' specified. Valid keys are '{{'name', 'digest', \
                 'context'}}'"
            )));
        }
        if entity == Entity::Metric && !matches!(value, Value::Number(_)) {
            return Err(bad(&format!("metrics.{key} is compared with a number")));
        }
        out.push(Condition {
            entity,
            key,
            op,
            value,
        });
        match toks.get(i).map(|t| t.to_uppercase()) {
            None => break,
            Some(a) if a == "AND" => i += 1,
            Some(other) => {
                return Err(bad(&format!(
                    "expected AND, found {other:?} (MLflow filters only AND conditions; runql's SQL can do more)"
                )));
            }
        }
    }
    Ok(out)
}

/// A run attribute's value, as MLflow's `Run.info` shows it.
enum Attr {
    Text(String),
    /// Milliseconds since the epoch.
    Millis(i64),
}

/// The attributes a filter or `order_by` may name; anything else is refused up front.
fn check_attribute(key: &str) -> Result<(), ApiError> {
    match key {
        "run_id" | "run_uuid" | "run_name" | "mlflow.runName" | "status" | "user_id"
        | "start_time" | "created" | "end_time" | "artifact_uri" => Ok(()),
        "lifecycle_stage" => Err(ApiError::invalid(format!(
            "searching by attributes.{key} is not supported"
        ))),
        other => Err(ApiError::invalid(format!(
            "Invalid attribute key '{other}'"
        ))),
    }
}

fn attribute(r: &RunRecord, key: &str) -> Option<Attr> {
    Some(match key {
        "run_id" | "run_uuid" => Attr::Text(r.run_id.clone()),
        "run_name" | "mlflow.runName" => Attr::Text(r.name.clone()?),
        "status" => Attr::Text(super::wire::status_name(r.status).to_string()),
        "user_id" => Attr::Text(r.username.clone()?),
        "start_time" | "created" => Attr::Millis(r.started.unwrap_or(r.created) / 1000),
        "end_time" => Attr::Millis(r.ended? / 1000),
        "artifact_uri" => Attr::Text(format!(
            "mlflow-artifacts:/{}/{}/artifacts",
            super::wire::experiment_id_of(&r.project),
            r.run_id
        )),
        _ => return None,
    })
}

impl Condition {
    /// Whether a metric's latest value (`None`: the run has no such metric) satisfies the
    /// condition; IEEE comparison, so NaN satisfies nothing.
    fn matches_number(&self, actual: Option<f64>) -> bool {
        let (Some(a), Value::Number(n)) = (actual, &self.value) else {
            return false;
        };
        a.partial_cmp(n).is_some_and(|ord| holds(&self.op, ord))
    }

    fn matches_attribute(&self, r: &RunRecord) -> bool {
        match attribute(r, &self.key) {
            None => false,
            Some(Attr::Millis(ms)) => self.matches(Some(&ms.to_string())),
            // MLflow's statuses are upper case; `status = 'finished'` finds them too.
            Some(Attr::Text(t)) if self.key == "status" => {
                let upper = Condition {
                    value: match &self.value {
                        Value::Text(v) => Value::Text(v.to_uppercase()),
                        Value::List(l) => Value::List(l.iter().map(|v| v.to_uppercase()).collect()),
                        v => v.clone(),
                    },
                    ..self.clone()
                };
                upper.matches(Some(&t))
            }
            Some(Attr::Text(t)) => self.matches(Some(&t)),
        }
    }
}

/// One `order_by` clause: `metrics.loss DESC`, `start_time`, `params.lr ASC`.
struct Order {
    entity: Entity,
    key: String,
    desc: bool,
}

fn parse_order(clause: &str) -> Result<Order, ApiError> {
    let parts: Vec<&str> = clause.split_whitespace().collect();
    let (ident, desc) = match parts.as_slice() {
        [ident] => (*ident, false),
        [ident, d] if d.eq_ignore_ascii_case("asc") => (*ident, false),
        [ident, d] if d.eq_ignore_ascii_case("desc") => (*ident, true),
        _ => {
            return Err(ApiError::invalid(format!(
                "Invalid order_by clause {clause:?}"
            )));
        }
    };
    let toks = tokens(ident)?;
    let ident = toks.first().cloned().unwrap_or_default();
    let (entity, key) = ident
        .split_once('.')
        .unwrap_or(("attributes", ident.as_str()));
    let key = unquote(key).unwrap_or_else(|| key.to_string());
    let entity = match entity {
        "metrics" | "metric" => Entity::Metric,
        "params" | "param" => Entity::Param,
        "tags" | "tag" => Entity::Tag,
        "datasets" | "dataset" => {
            return Err(ApiError::invalid("Invalid identifier type 'dataset'"));
        }
        _ => {
            check_attribute(&key)?;
            Entity::Attribute
        }
    };
    Ok(Order { entity, key, desc })
}

/// A value runs are sorted by.
#[derive(PartialEq)]
enum SortValue {
    Number(f64),
    Text(String),
}

impl SortValue {
    fn cmp(&self, other: &SortValue) -> std::cmp::Ordering {
        match (self, other) {
            (SortValue::Number(a), SortValue::Number(b)) => a.total_cmp(b),
            (SortValue::Text(a), SortValue::Text(b)) => a.cmp(b),
            (SortValue::Number(_), SortValue::Text(_)) => std::cmp::Ordering::Less,
            (SortValue::Text(_), SortValue::Number(_)) => std::cmp::Ordering::Greater,
        }
    }
}

/// What a search asks for.
pub(crate) struct Request<'a> {
    pub filter: &'a str,
    pub order_by: &'a [String],
    /// `Some(false)`: active runs only; `Some(true)`: deleted only; `None`: both.
    pub deleted: Option<bool>,
    pub max_results: usize,
    pub offset: usize,
}

/// The latest metric values, params and tags of the keys a search names, by key then run,
/// borrowed from the batches they were read into.
#[derive(Default)]
struct Values<'a> {
    metrics: HashMap<&'a str, HashMap<&'a str, f64>>,
    params: HashMap<&'a str, HashMap<&'a str, &'a str>>,
    tags: HashMap<&'a str, HashMap<&'a str, &'a str>>,
}

/// The latest values of metric keys, as `metric_summary` rows (`run_id`, `key`,
/// `last_value`): MLflow's system metrics (`system/…`, which runql keeps in `system_metrics`)
/// by their latest sample, every other key from `metric_summary`.
async fn read_metric_values(
    store: &Store,
    snap: &ProjectSnapshot,
    keys: &BTreeSet<String>,
) -> Result<Vec<RecordBatch>, ApiError> {
    let (system, points): (BTreeSet<String>, BTreeSet<String>) = keys
        .iter()
        .cloned()
        .partition(|k| super::logging::is_system(k));
    let mut out = read_values(store, snap, Table::MetricSummary, &points).await?;
    if system.is_empty() {
        return Ok(out);
    }
    let scan = Scan::project(&snap.project).keys(system.iter().cloned());
    let mut latest: HashMap<(String, String), (i64, f64)> = HashMap::new();
    for b in store
        .read_snapshot(snap, Table::SystemMetrics, &scan)
        .await?
    {
        let (id, key, ts, v) = (
            string_column(&b, "run_id")?,
            string_column(&b, "key")?,
            runql_core::store::timestamp_column(&b, "ts")?,
            f64_column(&b, "value")?,
        );
        for i in 0..b.num_rows() {
            if !system.contains(key.value(i)) {
                continue;
            }
            let e = latest
                .entry((id.value(i).to_string(), key.value(i).to_string()))
                .or_insert((i64::MIN, 0.0));
            if ts.value(i) >= e.0 {
                *e = (ts.value(i), v.value(i));
            }
        }
    }
    let (mut ids, mut ks, mut vs) = (Vec::new(), Vec::new(), Vec::new());
    for ((id, k), (_, v)) in latest {
        ids.push(id);
        ks.push(k);
        vs.push(v);
    }
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("run_id", arrow::datatypes::DataType::Utf8, false),
        arrow::datatypes::Field::new("key", arrow::datatypes::DataType::Utf8, false),
        arrow::datatypes::Field::new("last_value", arrow::datatypes::DataType::Float64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            std::sync::Arc::new(arrow::array::StringArray::from(ids)),
            std::sync::Arc::new(arrow::array::StringArray::from(ks)),
            std::sync::Arc::new(arrow::array::Float64Array::from(vs)),
        ],
    )
    .map_err(ApiError::internal)?;
    out.push(batch);
    Ok(out)
}

async fn read_values(
    store: &Store,
    snap: &ProjectSnapshot,
    table: Table,
    keys: &BTreeSet<String>,
) -> Result<Vec<RecordBatch>, ApiError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let scan = Scan::project(&snap.project).keys(keys.iter().cloned());
    let batches = store.read_snapshot(snap, table, &scan).await?;
    Ok(runql_core::store::resolve(table, batches)?)
}

/// The ids of one page of a run search over these projects' snapshots, in MLflow's order
/// (the `order_by` clauses with missing values last, then newest first, then by id), and
/// whether more pages follow. Evaluated here rather than in SQL: a search is a handful of
/// lookups per run over tables the store keeps decoded, where planning a query cost more
/// than answering it.
pub(crate) async fn run_ids(
    store: &Store,
    snaps: &[ProjectSnapshot],
    req: &Request<'_>,
) -> Result<(Vec<String>, bool), ApiError> {
    let conditions = parse(req.filter, false)?;
    let orders = req
        .order_by
        .iter()
        .map(|o| parse_order(o))
        .collect::<Result<Vec<_>, _>>()?;
    let mut keys: [BTreeSet<String>; 3] = Default::default();
    let slot = |e: Entity| match e {
        Entity::Metric => Some(0),
        Entity::Param => Some(1),
        Entity::Tag => Some(2),
        Entity::Attribute
        | Entity::Dataset
        | Entity::Metadata
        | Entity::Span
        | Entity::Feedback
        | Entity::Expectation => None,
    };
    for (entity, key) in conditions
        .iter()
        .map(|c| (c.entity, &c.key))
        .chain(orders.iter().map(|o| (o.entity, &o.key)))
    {
        match slot(entity) {
            Some(i) => {
                keys[i].insert(key.clone());
            }
            None if !matches!(entity, Entity::Attribute) => {}
            None => check_attribute(key)?,
        }
    }
    let with_datasets = conditions.iter().any(|c| c.entity == Entity::Dataset);
    let text = |b: &RecordBatch, name: &str| -> Result<arrow::array::StringArray, ApiError> {
        Ok(string_column(b, name)?.clone())
    };
    let mut runs: Vec<RunRecord> = Vec::new();
    let (mut metrics, mut params, mut tags) = (Vec::new(), Vec::new(), Vec::new());
    // Each run's dataset inputs (name, digest, context), when the filter names them.
    let mut datasets: HashMap<String, Vec<[Option<String>; 3]>> = HashMap::new();
    for snap in snaps {
        let scan = Scan::project(&snap.project);
        if with_datasets {
            for b in store.read_snapshot(snap, Table::Inputs, &scan).await? {
                let (id, name, digest, role) = (
                    string_column(&b, "run_id")?,
                    string_column(&b, "name")?,
                    string_column(&b, "digest")?,
                    string_column(&b, "role")?,
                );
                let opt = |a: &arrow::array::StringArray, i: usize| {
                    arrow::array::Array::is_valid(a, i).then(|| a.value(i).to_string())
                };
                for i in 0..b.num_rows() {
                    // The models a run produced are inputs with role 'output': not datasets.
                    if opt(role, i).as_deref() == Some(super::wire::OUTPUT_ROLE) {
                        continue;
                    }
                    datasets.entry(id.value(i).to_string()).or_default().push([
                        Some(name.value(i).to_string()),
                        opt(digest, i),
                        opt(role, i),
                    ]);
                }
            }
        }
        let (records, m, p, t) = tokio::try_join!(
            async {
                let b = store.read_snapshot(snap, Table::Runs, &scan).await?;
                Ok::<_, ApiError>(runql_core::store::resolve(Table::Runs, b)?)
            },
            read_metric_values(store, snap, &keys[0]),
            read_values(store, snap, Table::Params, &keys[1]),
            read_values(store, snap, Table::Tags, &keys[2]),
        )?;
        for b in &records {
            runs.extend(runql_core::store::records_from_batch(b)?);
        }
        metrics.extend(m);
        params.extend(p);
        tags.extend(t);
    }
    // Columns first (they own the strings the maps borrow), in the batches' order: a later
    // row of the same run and key wins, as `resolve` left at most one anyway.
    let mut columns = Vec::new();
    for b in &metrics {
        let v = f64_column(b, "last_value")?.clone();
        columns.push((text(b, "run_id")?, text(b, "key")?, v));
    }
    let mut string_columns = [Vec::new(), Vec::new()];
    for (slot, batches) in [&params, &tags].into_iter().enumerate() {
        for b in batches {
            string_columns[slot].push((text(b, "run_id")?, text(b, "key")?, text(b, "value")?));
        }
    }
    let mut values = Values::default();
    for (id, key, v) in &columns {
        for i in 0..arrow::array::Array::len(id) {
            values
                .metrics
                .entry(key.value(i))
                .or_default()
                .insert(id.value(i), v.value(i));
        }
    }
    for (slot, map) in [&mut values.params, &mut values.tags]
        .into_iter()
        .enumerate()
    {
        for (id, key, v) in &string_columns[slot] {
            for i in 0..arrow::array::Array::len(id) {
                map.entry(key.value(i))
                    .or_default()
                    .insert(id.value(i), v.value(i));
            }
        }
    }
    fn lookup<'v>(
        map: &HashMap<&str, HashMap<&str, &'v str>>,
        r: &RunRecord,
        key: &str,
    ) -> Option<&'v str> {
        map.get(key)?.get(r.run_id.as_str()).copied()
    }
    let metric = |r: &RunRecord, key: &str| {
        values
            .metrics
            .get(key)
            .and_then(|m| m.get(r.run_id.as_str()))
            .copied()
    };
    let mut hits: Vec<(Vec<Option<SortValue>>, RunRecord)> = Vec::new();
    for r in runs {
        if req.deleted.is_some_and(|d| d != r.deleted) {
            continue;
        }
        let keep = conditions.iter().all(|c| match c.entity {
            Entity::Metric => c.matches_number(metric(&r, &c.key)),
            Entity::Param => c.matches(lookup(&values.params, &r, &c.key)),
            Entity::Tag => c.matches(lookup(&values.tags, &r, &c.key)),
            Entity::Attribute => c.matches_attribute(&r),
            // Not parsed for runs.
            Entity::Metadata | Entity::Span | Entity::Feedback | Entity::Expectation => false,
            // Some dataset input of the run satisfies it (each condition on its own, as in
            // MLflow).
            Entity::Dataset => {
                let field = match c.key.as_str() {
                    "name" => 0,
                    "digest" => 1,
                    _ => 2,
                };
                datasets
                    .get(&r.run_id)
                    .is_some_and(|ds| ds.iter().any(|d| c.matches(d[field].as_deref())))
            }
        });
        if !keep {
            continue;
        }
        let sort = orders
            .iter()
            .map(|o| match o.entity {
                Entity::Metric => metric(&r, &o.key).map(SortValue::Number),
                Entity::Param => {
                    lookup(&values.params, &r, &o.key).map(|v| SortValue::Text(v.to_string()))
                }
                Entity::Tag => {
                    lookup(&values.tags, &r, &o.key).map(|v| SortValue::Text(v.to_string()))
                }
                Entity::Dataset
                | Entity::Metadata
                | Entity::Span
                | Entity::Feedback
                | Entity::Expectation => None,
                Entity::Attribute => attribute(&r, &o.key).map(|a| match a {
                    Attr::Text(t) => SortValue::Text(t),
                    Attr::Millis(ms) => SortValue::Number(ms as f64),
                }),
            })
            .collect();
        hits.push((sort, r));
    }
    hits.sort_by(|(a, ra), (b, rb)| {
        for ((x, y), o) in a.iter().zip(b).zip(&orders) {
            let ord = match (x, y) {
                (Some(x), Some(y)) if o.desc => y.cmp(x),
                (Some(x), Some(y)) => x.cmp(y),
                // Missing values last, whichever the direction.
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            };
            if ord.is_ne() {
                return ord;
            }
        }
        // MLflow's start times are milliseconds: runs started in the same one are tied, and
        // the tie goes to the smaller id.
        let start = |r: &RunRecord| r.started.unwrap_or(r.created).div_euclid(1000);
        start(rb)
            .cmp(&start(ra))
            .then_with(|| ra.run_id.cmp(&rb.run_id))
    });
    let more = hits.len() > req.offset + req.max_results;
    let ids = hits
        .into_iter()
        .skip(req.offset)
        .take(req.max_results)
        .map(|(_, r)| r.run_id)
        .collect();
    Ok((ids, more))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_like_mlflow() {
        let c = parse("metrics.val_loss < 0.5 and params.lr = '0.01' AND tags.`my tag` LIKE 'a%' and attributes.status = 'FINISHED'", false).unwrap_or_default();
        assert_eq!(c.len(), 4);
        assert_eq!(
            (c[0].entity, c[0].key.as_str(), c[0].op.as_str()),
            (Entity::Metric, "val_loss", "<")
        );
        assert_eq!(c[1].value, Value::Text("0.01".into()));
        assert_eq!(c[2].key, "my tag");
        assert_eq!(c[3].entity, Entity::Attribute);
        let c = parse("run_name IN ('a', 'b')", false).unwrap_or_default();
        assert_eq!(c[0].value, Value::List(vec!["a".into(), "b".into()]));
        assert!(parse("", false).unwrap_or_default().is_empty());
    }

    #[test]
    fn conditions_match_values_like_mlflow() {
        let c = |f: &str| parse(f, false).unwrap().remove(0);
        assert!(c("name LIKE 'exp-%'").matches(Some("exp-12")));
        assert!(!c("name LIKE 'exp-%'").matches(Some("Exp-12")));
        assert!(c("name ILIKE 'exp-%'").matches(Some("Exp-12")));
        assert!(c("name LIKE 'a_c%d'").matches(Some("abcxxd")));
        assert!(!c("name LIKE 'a_c%d'").matches(Some("abcxxe")));
        assert!(c("creation_time > 100").matches(Some("101")));
        assert!(!c("creation_time > 100").matches(Some("99")));
        assert!(c("tags.team != 'x'").matches(Some("y")));
        assert!(!c("tags.team != 'x'").matches(None));
        assert!(c("name IN ('a', 'b')").matches(Some("b")));
        assert!(!c("name NOT IN ('a', 'b')").matches(Some("b")));
    }

    #[test]
    fn quoted_keys_null_tests_and_datasets_parse_like_mlflow() {
        for f in [
            "metrics.\"val/acc\" > 0.5",
            "metrics.'val/acc' > 0.5",
            "metrics.`val/acc` > 0.5",
        ] {
            let c = parse(f, false).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert_eq!(
                (c[0].entity, c[0].key.as_str()),
                (Entity::Metric, "val/acc"),
                "{f}"
            );
        }
        let c = parse("params.lr IS NULL and tags.team is not null", false).unwrap();
        assert!(c[0].matches(None) && !c[0].matches(Some("")));
        assert!(c[1].matches(Some("")) && !c[1].matches(None));
        let err = parse("metrics.loss IS NULL", false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("only supported for tags and params, not for 'metric' 'loss'"),
            "{err}"
        );
        let c = parse(
            "datasets.name IN ('a', 'b') AND datasets.context != 'eval'",
            false,
        )
        .unwrap();
        assert_eq!(c[0].entity, Entity::Dataset);
        assert!(
            parse("datasets.source = 'x'", false)
                .unwrap_err()
                .to_string()
                .contains("Invalid dataset key 'source'")
        );
        assert!(
            parse("foo.x = 'a'", false)
                .unwrap_err()
                .to_string()
                .starts_with("Invalid entity type 'foo'")
        );
    }

    #[test]
    fn bad_filters_are_clear_errors() {
        for f in [
            "metrics.x < 'a'",
            "metrics.x <",
            "foo.x = 1",
            "metrics.x < 1 or metrics.y > 2",
            "params.x = 'a",
        ] {
            assert!(parse(f, false).is_err(), "{f}");
        }
    }
}
