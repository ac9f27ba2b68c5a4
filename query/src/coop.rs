//! Queries that can be stopped. A query stops (its time limit, its client gone) when its task
//! is dropped, which tokio only sees when the task yields. DataFusion makes the plan's leaves
//! yield (`EnsureCooperative`: budget consumed per batch a leaf produces), but an operator
//! that multiplies its input — a cross join, a nested-loop or hash join with many matches, an
//! unnest — turns a few leaf batches into billions of rows in one poll of the aggregate above
//! it, which then never yields: `count(*)` of a 4·10¹⁰-row cross join kept a core busy long
//! after its answer (a time-out) was sent. This rule puts a [`CooperativeExec`] on each such
//! operator, so its output batches consume the task's budget too.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::joins::{CrossJoinExec, HashJoinExec, NestedLoopJoinExec};
use datafusion::physical_plan::unnest::UnnestExec;

/// Wraps the operators whose output can be far larger than their input in
/// [`CooperativeExec`].
#[derive(Debug, Default)]
pub(crate) struct YieldingAmplifiers;

fn amplifies(plan: &dyn ExecutionPlan) -> bool {
    plan.is::<CrossJoinExec>()
        || plan.is::<NestedLoopJoinExec>()
        || plan.is::<HashJoinExec>()
        || plan.is::<UnnestExec>()
}

impl PhysicalOptimizerRule for YieldingAmplifiers {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if amplifies(node.as_ref()) {
                Ok(Transformed::yes(
                    Arc::new(CooperativeExec::new(node)) as Arc<dyn ExecutionPlan>
                ))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "runql_yielding_amplifiers"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cross_join_under_an_aggregate_stops_when_dropped() {
        let state = datafusion::execution::SessionStateBuilder::new()
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(YieldingAmplifiers))
            .build();
        let ctx = datafusion::prelude::SessionContext::new_with_state(state);
        let df = ctx
            .sql(
                "SELECT count(*), max(a.value + b.value) FROM generate_series(1, 1000000) a, \
                 generate_series(1, 1000000) b",
            )
            .await
            .unwrap();
        let plan = df.create_physical_plan().await.unwrap();
        let shown = datafusion::physical_plan::displayable(plan.as_ref())
            .indent(false)
            .to_string();
        assert!(shown.contains("CooperativeExec"), "{shown}");
        // A 10^12-row join: only stopping it ends this test.
        let task = tokio::spawn(datafusion::physical_plan::collect(plan, ctx.task_ctx()));
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        task.abort();
        let stopped = tokio::time::timeout(std::time::Duration::from_secs(60), task).await;
        assert!(
            matches!(stopped, Ok(Err(ref e)) if e.is_cancelled()),
            "the query did not stop: {stopped:?}"
        );
    }
}
