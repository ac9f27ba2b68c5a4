//! Client catalog queries DataFusion cannot plan as sent, rewritten to ones it can with the
//! same answer.
//!
//! Clients that reflect a table (SQLAlchemy's `inspect(engine).get_columns`, DBeaver, JDBC
//! metadata) look up one row per column with correlated scalar subqueries over `pg_catalog`:
//! `(SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = a.attrelid …)`.
//! DataFusion decorrelates a scalar subquery only when it is aggregated and its filter
//! compares inner columns with outer ones. Two rewrites, both exact for runql's catalog:
//!
//! - a scalar subquery over `pg_catalog` tables that are empty here (`pg_attrdef`,
//!   `pg_sequence`: the store has no column defaults, no sequences) is NULL, which is what
//!   Postgres answers for it;
//! - any other scalar subquery over `pg_catalog` alone returns its single column through
//!   `max(…)`: the catalog lookups clients send find at most one row (by oid), and of one
//!   row `max` is that row.
//!
//! Queries that name no `pg_` table are left as sent.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    Expr, GroupByExpr, Query, SelectItem, SetExpr, Statement, TableFactor, Value, Visit, VisitMut,
    Visitor, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// The catalog tables of objects the store does not have; each is checked to be empty when
/// the endpoint starts.
const MAYBE_EMPTY: &[&str] = &[
    "pg_attrdef",
    "pg_sequence",
    "pg_inherits",
    "pg_trigger",
    "pg_policy",
    "pg_rewrite",
    "pg_statistic_ext",
    "pg_partitioned_table",
    "pg_foreign_table",
];

/// The catalog tables that hold no row, read once when the endpoint starts.
#[derive(Debug, Default)]
pub(super) struct CatalogRewrite {
    empty: BTreeSet<String>,
}

impl CatalogRewrite {
    pub(super) async fn new(ctx: &SessionContext) -> datafusion::error::Result<Self> {
        let mut empty = BTreeSet::new();
        for name in MAYBE_EMPTY {
            let rows = match ctx
                .sql(&format!("SELECT 1 FROM pg_catalog.{name} LIMIT 1"))
                .await
            {
                Ok(df) => df.count().await,
                Err(e) => Err(e),
            };
            // A table the catalog lacks is left alone: the query fails as it would have.
            if matches!(rows, Ok(0)) {
                empty.insert(name.to_string());
            }
        }
        Ok(Self { empty })
    }

    /// `sql` rewritten, or `None` when it needs no rewrite (or does not parse: the error is
    /// then the parser's own, reported where the query is planned).
    pub(super) fn rewrite(&self, sql: &str) -> Option<String> {
        if !sql.to_ascii_lowercase().contains("pg_") {
            return None;
        }
        let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
        let mut visitor = Subqueries {
            empty: &self.empty,
            changed: false,
        };
        for statement in &mut statements {
            let _ = statement.visit(&mut visitor);
        }
        visitor.changed.then(|| {
            statements
                .iter()
                .map(Statement::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

struct Subqueries<'a> {
    empty: &'a BTreeSet<String>,
    changed: bool,
}

/// The tables a subquery reads, if all are `pg_catalog`'s (lowercased, unqualified).
fn catalog_tables(query: &Query) -> Option<Vec<String>> {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let mut tables = Vec::new();
    for from in &select.from {
        for factor in std::iter::once(&from.relation).chain(from.joins.iter().map(|j| &j.relation))
        {
            let TableFactor::Table { name, .. } = factor else {
                return None;
            };
            let parts: Vec<String> = name
                .0
                .iter()
                .map(|p| p.as_ident().map(|i| i.value.to_lowercase()))
                .collect::<Option<_>>()?;
            let table = match parts.as_slice() {
                [schema, table] if schema == "pg_catalog" => table.clone(),
                [table] if table.starts_with("pg_") => table.clone(),
                _ => return None,
            };
            tables.push(table);
        }
    }
    (!tables.is_empty()).then_some(tables)
}

const AGGREGATES: &[&str] = &[
    "max",
    "min",
    "count",
    "sum",
    "avg",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "first_value",
    "last_value",
    "json_agg",
    "jsonb_agg",
];

fn is_aggregate(expr: &Expr) -> bool {
    match expr {
        Expr::Function(f) => f
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .is_some_and(|i| AGGREGATES.contains(&i.value.to_lowercase().as_str())),
        Expr::Nested(e) | Expr::Cast { expr: e, .. } => is_aggregate(e),
        _ => false,
    }
}

/// NULL, still naming the parameters (`$n`) of `query`: clients bind every parameter they
/// sent, by position, so none may vanish from the statement.
fn null_keeping_parameters(query: &Query) -> Option<Expr> {
    struct Parameters {
        seen: BTreeSet<String>,
        exprs: Vec<String>,
    }
    impl Visitor for Parameters {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            let placeholder = |e: &Expr| match e {
                Expr::Value(v) => match &v.value {
                    Value::Placeholder(p) => Some(p.clone()),
                    _ => None,
                },
                _ => None,
            };
            let found = match expr {
                Expr::Cast { expr: inner, .. } => placeholder(inner),
                e => placeholder(e),
            };
            if let Some(p) = found
                && self.seen.insert(p)
            {
                self.exprs.push(format!("{expr} IS NULL"));
            }
            ControlFlow::Continue(())
        }
    }
    let mut found = Parameters {
        seen: BTreeSet::new(),
        exprs: Vec::new(),
    };
    let _ = query.visit(&mut found);
    if found.exprs.is_empty() {
        return Some(Expr::Value(Value::Null.into()));
    }
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&format!(
            "CASE WHEN {} THEN NULL END",
            found.exprs.join(" AND ")
        ))
        .ok()?
        .parse_expr()
        .ok()
}

/// `max(<expr>)`, parsed rather than built: the AST of a call has many fields.
fn max_of(expr: &Expr) -> Option<Expr> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&format!("max({expr})"))
        .ok()?
        .parse_expr()
        .ok()
}

impl VisitorMut for Subqueries<'_> {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let Expr::Subquery(query) = expr else {
            return ControlFlow::Continue(());
        };
        let Some(tables) = catalog_tables(query) else {
            return ControlFlow::Continue(());
        };
        if tables.iter().all(|t| self.empty.contains(t)) {
            if let Some(null) = null_keeping_parameters(query) {
                *expr = null;
                self.changed = true;
            }
            return ControlFlow::Continue(());
        }
        let SetExpr::Select(select) = query.body.as_mut() else {
            return ControlFlow::Continue(());
        };
        let grouped = !matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty());
        if grouped || select.projection.len() != 1 || query.limit_clause.is_some() {
            return ControlFlow::Continue(());
        }
        let item = match &mut select.projection[0] {
            SelectItem::UnnamedExpr(e) => e,
            SelectItem::ExprWithAlias { expr, .. } => expr,
            _ => return ControlFlow::Continue(()),
        };
        if !is_aggregate(item)
            && let Some(max) = max_of(item)
        {
            *item = max;
            self.changed = true;
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(sql: &str) -> Option<String> {
        CatalogRewrite {
            empty: ["pg_attrdef".to_string()].into_iter().collect(),
        }
        .rewrite(sql)
    }

    #[test]
    fn catalog_lookups_are_aggregated_and_empty_tables_are_null() {
        let sql = "SELECT a.attname, (SELECT d.adbin FROM pg_catalog.pg_attrdef d \
                   WHERE d.adrelid = a.attrelid), (SELECT t.typname FROM pg_type t \
                   WHERE t.oid = a.atttypid) FROM pg_catalog.pg_attribute a";
        let out = rewrite(sql).unwrap();
        assert!(out.contains("NULL") && !out.contains("pg_attrdef"), "{out}");
        assert!(out.contains("(SELECT max(t.typname) FROM pg_type"), "{out}");
        // Its parameters stay: clients bind them by position.
        let out = rewrite(
            "SELECT (SELECT d.adbin FROM pg_attrdef d WHERE d.adnum = $1::INT) AS d, \
             a.attname FROM pg_attribute a WHERE a.attnum > $2",
        )
        .unwrap();
        assert!(
            out.contains("$1::INT IS NULL") && out.contains("$2"),
            "{out}"
        );
    }

    #[test]
    fn user_queries_are_left_as_sent() {
        assert_eq!(
            rewrite("SELECT (SELECT max(value) FROM metrics) FROM runs"),
            None
        );
        assert_eq!(
            rewrite("SELECT (SELECT value FROM metrics m WHERE m.run_id = r.run_id) FROM runs r"),
            None
        );
        // Already aggregated: nothing to do.
        assert_eq!(rewrite("SELECT (SELECT count(*) FROM pg_class) AS n"), None);
    }
}
