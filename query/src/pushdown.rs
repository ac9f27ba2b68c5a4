//! Which projects, runs and keys a query's filters select, read off DataFusion's filter
//! expressions before any file is opened. Everything here is a superset: the filters are still
//! applied to the rows afterwards, so an expression we do not understand only costs pruning.

use std::collections::BTreeSet;

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use datafusion::error::Result as DFResult;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};

/// What every runql table answers `supports_filters_pushdown`: each filter is used for
/// pruning and reported `Inexact`, so DataFusion applies it again and pruning can only skip
/// work, never change a result.
pub fn inexact(filters: &[&Expr]) -> DFResult<Vec<TableProviderFilterPushDown>> {
    Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
}

/// `schema` with only the `projection` a scan asks for (all of it for `None`).
pub fn projected(schema: &SchemaRef, projection: Option<&Vec<usize>>) -> DFResult<SchemaRef> {
    Ok(match projection {
        Some(p) => Arc::new(schema.project(p)?),
        None => schema.clone(),
    })
}

/// The string sets a scan can prune by. `None` means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pushdown {
    pub projects: Option<BTreeSet<String>>,
    pub run_ids: Option<BTreeSet<String>>,
    pub keys: Option<BTreeSet<String>>,
}

impl Pushdown {
    /// Reads the sets off a scan's filters (which DataFusion has already split on `AND`).
    pub fn from_filters(filters: &[Expr]) -> Pushdown {
        let mut p = Pushdown::default();
        for f in filters {
            for conjunct in split_and(f) {
                narrow(&mut p.projects, string_set(conjunct, "project"));
                narrow(&mut p.run_ids, string_set(conjunct, "run_id"));
                narrow(&mut p.keys, string_set(conjunct, "key"));
            }
        }
        p
    }

    /// Whether the filters can match no row at all (`run_id = 'a' AND run_id = 'b'`).
    pub fn is_empty(&self) -> bool {
        [&self.projects, &self.run_ids, &self.keys]
            .iter()
            .any(|s| s.as_ref().is_some_and(BTreeSet::is_empty))
    }

    /// Whether a run passes the run filter.
    pub fn wants_run(&self, run_id: &str) -> bool {
        self.run_ids.as_ref().is_none_or(|r| r.contains(run_id))
    }
}

fn split_and(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => {
            let mut v = split_and(left);
            v.extend(split_and(right));
            v
        }
        other => vec![other],
    }
}

fn narrow(current: &mut Option<BTreeSet<String>>, new: Option<BTreeSet<String>>) {
    let Some(new) = new else { return };
    *current = Some(match current.take() {
        None => new,
        Some(old) => old.intersection(&new).cloned().collect(),
    });
}

/// The values `column` can take for `e` to be true, when `e` says so plainly:
/// `column = 'x'`, `'x' = column`, `column IN ('x', 'y')`, and `OR`s of those.
fn string_set(e: &Expr, column: &str) -> Option<BTreeSet<String>> {
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
            Operator::Eq => match (is_column(left, column), is_column(right, column)) {
                (true, false) => literal(right).map(|v| BTreeSet::from([v])),
                (false, true) => literal(left).map(|v| BTreeSet::from([v])),
                _ => None,
            },
            Operator::Or => {
                let mut l = string_set(left, column)?;
                l.extend(string_set(right, column)?);
                Some(l)
            }
            Operator::And => {
                // Inside an OR branch: either side constraining the column is enough.
                match (string_set(left, column), string_set(right, column)) {
                    (Some(l), Some(r)) => Some(l.intersection(&r).cloned().collect()),
                    (Some(s), None) | (None, Some(s)) => Some(s),
                    (None, None) => None,
                }
            }
            _ => None,
        },
        Expr::InList(list) if !list.negated && is_column(&list.expr, column) => {
            list.list.iter().map(literal).collect()
        }
        _ => None,
    }
}

fn is_column(e: &Expr, column: &str) -> bool {
    match e {
        Expr::Column(c) => c.name == column,
        // The planner may wrap a dictionary or view column in a cast to compare it; only a
        // string-to-string cast keeps equality meaning equality.
        Expr::Cast(c) if is_string(c.field.data_type()) => is_column(&c.expr, column),
        _ => false,
    }
}

fn literal(e: &Expr) -> Option<String> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(v))
            | ScalarValue::LargeUtf8(Some(v))
            | ScalarValue::Utf8View(Some(v)),
            _,
        ) => Some(v.clone()),
        Expr::Cast(c) if is_string(c.field.data_type()) => literal(&c.expr),
        _ => None,
    }
}

fn is_string(t: &datafusion::arrow::datatypes::DataType) -> bool {
    use datafusion::arrow::datatypes::DataType;
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => is_string(v),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, in_list, lit};

    fn set(v: &[&str]) -> Option<BTreeSet<String>> {
        Some(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn equalities_in_lists_and_ors_select_values() {
        let p = Pushdown::from_filters(&[
            col("project").eq(lit("p")),
            in_list(col("run_id"), vec![lit("a"), lit("b")], false),
            col("key").eq(lit("loss")).or(lit("acc").eq(col("key"))),
        ]);
        assert_eq!(p.projects, set(&["p"]));
        assert_eq!(p.run_ids, set(&["a", "b"]));
        assert_eq!(p.keys, set(&["acc", "loss"]));
    }

    #[test]
    fn filters_we_cannot_read_select_everything() {
        let p = Pushdown::from_filters(&[
            col("key").like(lit("val_%")),
            col("run_id").eq(lit("a")).or(col("step").gt(lit(3))),
            in_list(col("project"), vec![lit("p")], true),
        ]);
        assert_eq!(p, Pushdown::default());
    }

    #[test]
    fn lossy_casts_select_everything() {
        use datafusion::arrow::datatypes::DataType;
        use datafusion::logical_expr::cast;
        let p =
            Pushdown::from_filters(&[
                cast(cast(col("project"), DataType::Int64), DataType::Utf8).eq(lit("1"))
            ]);
        assert_eq!(p.projects, None);
        let p = Pushdown::from_filters(&[cast(col("project"), DataType::Utf8View).eq(lit("p"))]);
        assert_eq!(p.projects, set(&["p"]));
    }

    #[test]
    fn contradictions_select_nothing() {
        let p = Pushdown::from_filters(&[col("run_id").eq(lit("a")), col("run_id").eq(lit("b"))]);
        assert!(p.is_empty());
    }
}
