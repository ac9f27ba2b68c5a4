//! `study.trials_dataframe().to_csv()`: one row per trial; columns `number`, `value` (or
//! `values_<i>` / `values_<metric name>`), `datetime_start`, `datetime_complete`, `duration`,
//! `params_<name>`, `user_attrs_<name>`, `system_attrs_<name>`, `state`. pandas writes empty
//! cells for missing values, `True`/`False` for booleans, and naive datetimes (read as UTC).

use runql_plugin_sdk::text::csv_records;
use serde_json::Value;

use crate::{Study, Trial, parse_datetime};

fn cell(v: &str) -> Option<Value> {
    if v.is_empty() {
        return None;
    }
    Some(match v {
        "True" => Value::Bool(true),
        "False" => Value::Bool(false),
        _ => match v.parse::<f64>() {
            Ok(f) => serde_json::Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(v.to_string())),
            Err(_) => serde_json::from_str::<Value>(v)
                .ok()
                .filter(|j| j.is_array() || j.is_object())
                .unwrap_or_else(|| Value::String(v.to_string())),
        },
    })
}

fn float(v: &str) -> Option<f64> {
    match v {
        "" => None,
        "inf" | "Infinity" => Some(f64::INFINITY),
        "-inf" | "-Infinity" => Some(f64::NEG_INFINITY),
        "nan" | "NaN" => Some(f64::NAN),
        _ => v.parse().ok(),
    }
}

/// One study out of its trials CSV.
pub fn parse(text: &str, study: &str) -> Result<Study, String> {
    let mut rows = csv_records(text).into_iter();
    let (_, header) = rows.next().ok_or("the CSV is empty")?;
    let col = |name: &str| header.iter().position(|h| h == name);
    let number = col("number").ok_or("line 1: no `number` column (not a trials_dataframe CSV)")?;
    let state = col("state").ok_or("line 1: no `state` column (not a trials_dataframe CSV)")?;
    let value_cols: Vec<(usize, String)> = header
        .iter()
        .enumerate()
        .filter(|(_, h)| *h == "value" || h.starts_with("values_"))
        .map(|(i, h)| (i, h.trim_start_matches("values_").to_string()))
        .collect();
    let mut s = Study {
        name: study.to_string(),
        ..Study::default()
    };
    let names: Vec<String> = value_cols.iter().map(|(_, n)| n.clone()).collect();
    if value_cols.len() > 1 && names.iter().any(|n| n.parse::<usize>().is_err()) {
        s.system_attrs
            .insert("study:metric_names".into(), Value::from(names.clone()));
    }
    s.directions = vec!["NOT_SET".to_string(); value_cols.len().max(1)];
    for (line, row) in rows {
        if row.len() == 1 && row[0].is_empty() {
            continue;
        }
        if row.len() != header.len() {
            return Err(format!(
                "line {line}: {} fields, but the header has {}",
                row.len(),
                header.len()
            ));
        }
        let mut t = Trial {
            number: row[number]
                .parse::<f64>()
                .map(|n| n as i64)
                .map_err(|_| format!("line {line}: number {:?} is not a number", row[number]))?,
            state: row[state].clone(),
            ..Trial::default()
        };
        let values: Vec<Option<f64>> = value_cols.iter().map(|(i, _)| float(&row[*i])).collect();
        if values.iter().all(Option::is_some) && !values.is_empty() {
            t.values = Some(values.into_iter().flatten().collect());
        }
        for (i, h) in header.iter().enumerate() {
            if let Some(p) = h.strip_prefix("params_") {
                if let Some(v) = cell(&row[i]) {
                    t.params.insert(p.to_string(), (v, None));
                }
            } else if let Some(a) = h.strip_prefix("user_attrs_") {
                if let Some(v) = cell(&row[i]) {
                    t.user_attrs.insert(a.to_string(), v);
                }
            } else if let Some(a) = h.strip_prefix("system_attrs_") {
                if let Some(v) = cell(&row[i]) {
                    t.system_attrs.insert(a.to_string(), v);
                }
            } else if h == "datetime_start" {
                t.start_us = parse_datetime(&row[i]);
            } else if h == "datetime_complete" {
                t.complete_us = parse_datetime(&row[i]);
            }
        }
        s.trials.push(t);
    }
    Ok(s)
}
