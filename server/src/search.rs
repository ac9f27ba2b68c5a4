//! MLflow's run search, translated to SQL: filter strings (`metrics.val_loss < 0.5 and
//! params.lr = '0.01'`), `order_by` clauses and paging become one query over `runs`, with each
//! condition an `EXISTS` over `metric_summary`, `params` or `tags` (pruned by key).

use crate::ApiError;

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
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Number(f64),
    Text(String),
    List(Vec<String>),
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
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
            if j < chars.len() && chars[j] == '`' && s.ends_with('.') {
                let mut k = j + 1;
                let mut key = String::new();
                while k < chars.len() && chars[k] != '`' {
                    key.push(chars[k]);
                    k += 1;
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
    parse(filter)
}

impl Condition {
    /// `attributes`, `metrics`, `params` or `tags`.
    pub(crate) fn entity_name(&self) -> &'static str {
        match self.entity {
            Entity::Metric => "metrics",
            Entity::Param => "params",
            Entity::Tag => "tags",
            Entity::Attribute => "attributes",
        }
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// Whether a value (`None`: absent) satisfies the condition. Numbers compare as numbers
    /// when both sides are numbers; `LIKE` uses SQL's `%` and `_`, `ILIKE` ignores case.
    pub(crate) fn matches(&self, actual: Option<&str>) -> bool {
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
                let Some(ord) = ord else { return false };
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
        }
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

fn parse(filter: &str) -> Result<Vec<Condition>, ApiError> {
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
            other => return Err(bad(&format!("unknown entity {other:?}"))),
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
            other => return Err(bad(&format!("unknown comparison {other:?}"))),
        };
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

fn sql_value(v: &Value) -> String {
    match v {
        Value::Number(n) => format!("{n}"),
        Value::Text(s) => quote(s),
        Value::List(items) => format!(
            "({})",
            items
                .iter()
                .map(|s| quote(s))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// An attribute as a SQL expression over `runs r`, and whether it holds MLflow milliseconds.
fn attribute(key: &str) -> Result<(String, bool), ApiError> {
    Ok(match key {
        "run_id" | "run_uuid" => ("r.run_id".into(), false),
        "run_name" | "mlflow.runName" => ("r.name".into(), false),
        "status" => (
            "upper(CASE r.status WHEN 'crashed' THEN 'failed' ELSE r.status END)".into(),
            false,
        ),
        "user_id" => ("r.username".into(), false),
        "start_time" | "created" => (
            "CAST(coalesce(r.started, r.created) AS BIGINT) / 1000".into(),
            true,
        ),
        "end_time" => ("CAST(r.ended AS BIGINT) / 1000".into(), true),
        "artifact_uri" | "lifecycle_stage" => {
            return Err(ApiError::invalid(format!(
                "searching by attributes.{key} is not supported"
            )));
        }
        other => {
            return Err(ApiError::invalid(format!(
                "Invalid attribute key '{other}'"
            )));
        }
    })
}

/// `projects`: the SQL list of the searched projects, repeated inside each subquery so that it
/// reads those projects only (DataFusion does not carry `r.project IN (…)` across the join).
fn condition_sql(c: &Condition, projects: &str) -> Result<String, ApiError> {
    let v = sql_value(&c.value);
    let key = quote(&c.key);
    Ok(match c.entity {
        Entity::Metric => format!(
            "EXISTS (SELECT 1 FROM metric_summary s WHERE s.project IN ({projects}) AND s.project = r.project AND s.run_id = r.run_id AND s.key = {key} AND s.last_value {} {v})",
            c.op
        ),
        Entity::Param => format!(
            "EXISTS (SELECT 1 FROM params p WHERE p.project IN ({projects}) AND p.project = r.project AND p.run_id = r.run_id AND p.key = {key} AND p.value {} {v})",
            c.op
        ),
        Entity::Tag => format!(
            "EXISTS (SELECT 1 FROM tags t WHERE t.project IN ({projects}) AND t.project = r.project AND t.run_id = r.run_id AND t.key = {key} AND t.value {} {v})",
            c.op
        ),
        Entity::Attribute => {
            let (expr, _) = attribute(&c.key)?;
            let v = match (&c.value, c.key.as_str()) {
                (Value::Text(s), "status") => quote(&s.to_uppercase()),
                _ => v,
            };
            format!("{expr} {} {v}", c.op)
        }
    })
}

/// The SQL selecting the run ids of one page, and the offset of the next page when there may be one.
pub(crate) fn runs_sql(
    projects: &[String],
    filter: &str,
    order_by: &[String],
    deleted: Option<bool>,
    max_results: usize,
    offset: usize,
) -> Result<String, ApiError> {
    let project_list = projects
        .iter()
        .map(|p| quote(p))
        .collect::<Vec<_>>()
        .join(", ");
    let mut wheres = vec![format!("r.project IN ({project_list})")];
    if let Some(d) = deleted {
        wheres.push(format!("r.deleted = {d}"));
    }
    for c in parse(filter)? {
        wheres.push(condition_sql(&c, &project_list)?);
    }
    let mut columns = vec!["r.run_id".to_string()];
    let mut orders = Vec::new();
    for (i, clause) in order_by.iter().enumerate() {
        let parts: Vec<&str> = clause.split_whitespace().collect();
        let (ident, dir) = match parts.as_slice() {
            [ident] => (*ident, "ASC"),
            [ident, d] if d.eq_ignore_ascii_case("asc") || d.eq_ignore_ascii_case("desc") => {
                (*ident, *d)
            }
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
        let expr = match entity {
            "metrics" | "metric" => format!(
                "(SELECT max(s.last_value) FROM metric_summary s WHERE s.project IN ({project_list}) AND s.project = r.project AND s.run_id = r.run_id AND s.key = {})",
                quote(&key)
            ),
            "params" | "param" => format!(
                "(SELECT max(p.value) FROM params p WHERE p.project IN ({project_list}) AND p.project = r.project AND p.run_id = r.run_id AND p.key = {})",
                quote(&key)
            ),
            "tags" | "tag" => format!(
                "(SELECT max(t.value) FROM tags t WHERE t.project IN ({project_list}) AND t.project = r.project AND t.run_id = r.run_id AND t.key = {})",
                quote(&key)
            ),
            _ => attribute(&key)?.0,
        };
        columns.push(format!("{expr} AS o{i}"));
        orders.push(format!("o{i} {} NULLS LAST", dir.to_uppercase()));
    }
    orders.push("coalesce(r.started, r.created) DESC".into());
    orders.push("r.run_id".into());
    Ok(format!(
        "SELECT {} FROM runs r WHERE {} ORDER BY {} LIMIT {} OFFSET {offset}",
        columns.join(", "),
        wheres.join(" AND "),
        orders.join(", "),
        max_results + 1,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_like_mlflow() {
        let c = parse("metrics.val_loss < 0.5 and params.lr = '0.01' AND tags.`my tag` LIKE 'a%' and attributes.status = 'FINISHED'").unwrap_or_default();
        assert_eq!(c.len(), 4);
        assert_eq!(
            (c[0].entity, c[0].key.as_str(), c[0].op.as_str()),
            (Entity::Metric, "val_loss", "<")
        );
        assert_eq!(c[1].value, Value::Text("0.01".into()));
        assert_eq!(c[2].key, "my tag");
        assert_eq!(c[3].entity, Entity::Attribute);
        let c = parse("run_name IN ('a', 'b')").unwrap_or_default();
        assert_eq!(c[0].value, Value::List(vec!["a".into(), "b".into()]));
        assert!(parse("").unwrap_or_default().is_empty());
    }

    #[test]
    fn conditions_match_values_like_mlflow() {
        let c = |f: &str| parse(f).unwrap().remove(0);
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
    fn bad_filters_are_clear_errors() {
        for f in [
            "metrics.x < 'a'",
            "metrics.x <",
            "foo.x = 1",
            "metrics.x < 1 or metrics.y > 2",
            "params.x = 'a",
        ] {
            assert!(parse(f).is_err(), "{f}");
        }
    }
}
