//! `sparkline(step, value [, width])`: an aggregate that draws a series as a line of block
//! characters (`▁▂▃▄▅▆▇█`), so a learning curve fits in a result-table cell:
//! `SELECT run_id, sparkline(step, value) FROM metrics WHERE key = 'loss' GROUP BY run_id`.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Int64Type};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, Signature, TypeSignature, Volatility,
};

/// Characters for eight levels, lowest first.
const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
/// Characters drawn when no width is given.
pub const DEFAULT_WIDTH: usize = 20;

#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct Sparkline {
    signature: Signature,
}

impl Sparkline {
    pub(crate) fn new() -> Sparkline {
        Sparkline {
            signature: Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![DataType::Int64, DataType::Float64]),
                    TypeSignature::Exact(vec![DataType::Int64, DataType::Float64, DataType::Int64]),
                ],
                Volatility::Immutable,
            ),
        }
    }
}

impl AggregateUDFImpl for Sparkline {
    fn name(&self) -> &str {
        "sparkline"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn accumulator(&self, _args: AccumulatorArgs<'_>) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(SparklineAccumulator::default()))
    }

    fn state_fields(&self, _args: StateFieldsArgs<'_>) -> Result<Vec<FieldRef>> {
        let list = |name: &str, t: DataType| {
            Arc::new(Field::new(
                name,
                DataType::List(Arc::new(Field::new_list_field(t, true))),
                true,
            ))
        };
        Ok(vec![
            list("steps", DataType::Int64),
            list("values", DataType::Float64),
            Arc::new(Field::new("width", DataType::Int64, true)),
        ])
    }
}

#[derive(Debug, Default)]
struct SparklineAccumulator {
    points: Vec<(i64, f64)>,
    width: Option<usize>,
}

impl Accumulator for SparklineAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let steps = cast(&values[0], &DataType::Int64)?;
        let vals = cast(&values[1], &DataType::Float64)?;
        let steps = steps.as_primitive::<Int64Type>();
        let vals = vals.as_primitive::<Float64Type>();
        for i in 0..steps.len() {
            if steps.is_valid(i) && vals.is_valid(i) {
                self.points.push((steps.value(i), vals.value(i)));
            }
        }
        if let Some(w) = values.get(2) {
            let w = cast(w, &DataType::Int64)?;
            let w = w.as_primitive::<Int64Type>();
            if let Some(v) = (0..w.len()).find(|&i| w.is_valid(i)).map(|i| w.value(i)) {
                if !(1..=1000).contains(&v) {
                    return exec_err!("sparkline: width must be between 1 and 1000, got {v}");
                }
                self.width = Some(v as usize);
            }
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Utf8(draw(
            &mut self.points,
            self.width.unwrap_or(DEFAULT_WIDTH),
        )))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.points.capacity() * 16
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let steps = Int64Array::from_iter_values(self.points.iter().map(|p| p.0));
        let vals = Float64Array::from_iter_values(self.points.iter().map(|p| p.1));
        Ok(vec![
            ScalarValue::List(ScalarValue::new_list_nullable(
                &scalars(&steps)?,
                &DataType::Int64,
            )),
            ScalarValue::List(ScalarValue::new_list_nullable(
                &scalars(&vals)?,
                &DataType::Float64,
            )),
            ScalarValue::Int64(self.width.map(|w| w as i64)),
        ])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let steps = states[0].as_list::<i32>();
        let vals = states[1].as_list::<i32>();
        for row in 0..steps.len() {
            if steps.is_null(row) || vals.is_null(row) {
                continue;
            }
            let s = steps.value(row);
            let v = vals.value(row);
            let s = s.as_primitive::<Int64Type>();
            let v = v.as_primitive::<Float64Type>();
            for i in 0..s.len().min(v.len()) {
                self.points.push((s.value(i), v.value(i)));
            }
        }
        let widths = states[2].as_primitive::<Int64Type>();
        if let Some(i) = (0..widths.len()).find(|&i| widths.is_valid(i)) {
            self.width = Some(widths.value(i) as usize);
        }
        Ok(())
    }
}

fn scalars(array: &dyn Array) -> Result<Vec<ScalarValue>> {
    (0..array.len())
        .map(|i| ScalarValue::try_from_array(array, i))
        .collect()
}

/// The sparkline of `points` (any order): `width` buckets of steps, each drawn at the level of
/// its mean (NaN and ±inf left out); `None` when there is nothing to draw.
fn draw(points: &mut [(i64, f64)], width: usize) -> Option<String> {
    points.sort_by_key(|p| p.0);
    let finite: Vec<(i64, f64)> = points.iter().copied().filter(|p| p.1.is_finite()).collect();
    let (first, last) = (finite.first()?.0, finite.last()?.0);
    let buckets = width.min(finite.len()).max(1);
    let span = last as i128 - first as i128 + 1;
    let mut sums = vec![(0.0f64, 0usize); buckets];
    for (s, v) in &finite {
        let b = (((*s as i128 - first as i128) * buckets as i128) / span) as usize;
        let e = &mut sums[b.min(buckets - 1)];
        e.0 += v;
        e.1 += 1;
    }
    let means: Vec<Option<f64>> = sums
        .iter()
        .map(|(sum, n)| (*n > 0).then(|| sum / *n as f64))
        .collect();
    let lo = means
        .iter()
        .flatten()
        .copied()
        .fold(f64::INFINITY, f64::min);
    let hi = means
        .iter()
        .flatten()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    Some(
        means
            .iter()
            .map(|m| match m {
                None => ' ',
                Some(_) if hi <= lo => BLOCKS[3],
                Some(v) => BLOCKS[(((v - lo) / (hi - lo)) * 7.0).round() as usize],
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_falling_curve_falls() {
        let mut p: Vec<(i64, f64)> = (0..100)
            .rev()
            .map(|s| (s, 1.0 / (s as f64 + 1.0)))
            .collect();
        let line = draw(&mut p, 8).unwrap();
        assert_eq!(line.chars().count(), 8);
        assert!(line.starts_with('█') && line.ends_with('▁'), "{line}");
    }

    #[test]
    fn extreme_steps_do_not_overflow() {
        assert_eq!(
            draw(&mut [(i64::MIN, 0.0), (i64::MAX, 1.0)], 4).as_deref(),
            Some("▁█")
        );
    }

    #[test]
    fn flat_short_and_empty_series() {
        assert_eq!(draw(&mut [(0, 2.0), (1, 2.0)], 20).as_deref(), Some("▄▄"));
        assert_eq!(draw(&mut [(0, f64::NAN)], 20), None);
        assert_eq!(draw(&mut [], 20), None);
    }
}
