//! The Postgres functions clients call that DataFusion and datafusion-postgres lack, or
//! answer differently: `version()`, `to_regtype`, `pg_get_serial_sequence`,
//! `pg_collation_is_visible`, `json_build_object`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int32Array, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Int32Type};
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

/// Registers the functions on `ctx` (its `pg_catalog` set up already: `to_regtype` reads
/// `pg_type`).
pub(super) async fn register(ctx: &SessionContext) -> Result<()> {
    for f in [
        Fixed {
            name: "version",
            signature: Signature::nullary(Volatility::Immutable),
            returns: DataType::Utf8,
            answer: version,
        },
        Fixed {
            // No column of the store has a sequence; SQLAlchemy asks of every column.
            name: "pg_get_serial_sequence",
            signature: Signature::string(2, Volatility::Stable),
            returns: DataType::Utf8,
            answer: |_| ScalarValue::Utf8(None),
        },
        Fixed {
            // One schema of collations, all visible.
            name: "pg_collation_is_visible",
            signature: Signature::any(1, Volatility::Stable),
            returns: DataType::Boolean,
            answer: |_| ScalarValue::Boolean(Some(true)),
        },
    ] {
        ctx.register_udf(ScalarUDF::new_from_impl(f));
    }
    ctx.register_udf(ScalarUDF::new_from_impl(JsonBuildObject {
        signature: Signature::variadic_any(Volatility::Immutable),
    }));
    ctx.register_udf(ScalarUDF::new_from_impl(ToRegtype::new(ctx).await?));
    Ok(())
}

/// `PostgreSQL 16.6 (runql 0.1.0) on x86_64-linux`: the shape clients parse (SQLAlchemy reads
/// the release from it).
fn version(_: &ScalarFunctionArgs) -> ScalarValue {
    let release = super::SERVER_VERSION
        .split_whitespace()
        .next()
        .unwrap_or("16");
    ScalarValue::Utf8(Some(format!(
        "PostgreSQL {release} (runql {}) on {}-{}",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
        std::env::consts::OS,
    )))
}

/// A function whose answer does not depend on its arguments' values (equal by name: one
/// function per name is registered).
#[derive(Debug)]
struct Fixed {
    name: &'static str,
    signature: Signature,
    returns: DataType,
    answer: fn(&ScalarFunctionArgs) -> ScalarValue,
}

impl PartialEq for Fixed {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Fixed {}

impl std::hash::Hash for Fixed {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for Fixed {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(self.returns.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar((self.answer)(&args)))
    }
}

/// `json_build_object(key, value, ...)`: a JSON object as text, keys and values in the order
/// given (numbers and booleans bare, NULL as `null`, the rest as JSON strings).
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObject {
    signature: Signature,
}

impl ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if !args.args.len().is_multiple_of(2) {
            return Err(datafusion::error::DataFusionError::Plan(
                "json_build_object takes keys and values in pairs: its argument count must be \
                 even"
                    .into(),
            ));
        }
        let n = args.number_rows;
        let columns: Vec<(ArrayRef, bool)> = args
            .args
            .iter()
            .map(|a| {
                let array = a.to_array(n)?;
                let bare =
                    array.data_type().is_numeric() || array.data_type() == &DataType::Boolean;
                let text = datafusion::arrow::compute::cast(&array, &DataType::Utf8)?;
                Ok((text, bare))
            })
            .collect::<Result<_>>()?;
        let mut out = StringBuilder::new();
        for row in 0..n {
            let mut object = String::from("{");
            for pair in columns.chunks(2) {
                let (keys, _) = &pair[0];
                let (values, bare) = &pair[1];
                let keys = keys.as_string::<i32>();
                let values = values.as_string::<i32>();
                if keys.is_null(row) {
                    return Err(datafusion::error::DataFusionError::Execution(
                        "json_build_object: a key is NULL (keys must be given)".into(),
                    ));
                }
                let value = if values.is_null(row) {
                    serde_json::Value::Null
                } else if *bare {
                    serde_json::from_str(values.value(row))
                        .unwrap_or_else(|_| serde_json::Value::String(values.value(row).into()))
                } else {
                    serde_json::Value::String(values.value(row).into())
                };
                if object.len() > 1 {
                    object.push_str(", ");
                }
                object.push_str(&serde_json::Value::String(keys.value(row).into()).to_string());
                object.push_str(" : ");
                object.push_str(&value.to_string());
            }
            object.push('}');
            out.append_value(object);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// `to_regtype(name)`: the oid of the type `name` in `pg_catalog.pg_type`, or NULL (never an
/// error, as in Postgres). The catalog's types are fixed, so they are read once.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ToRegtype {
    signature: Signature,
    oids: std::collections::BTreeMap<String, i32>,
}

impl ToRegtype {
    pub(super) async fn new(ctx: &SessionContext) -> Result<Self> {
        let batches = ctx
            .sql("SELECT typname, CAST(oid AS INT) FROM pg_catalog.pg_type")
            .await?
            .collect()
            .await?;
        let mut oids = std::collections::BTreeMap::new();
        for batch in &batches {
            let names = datafusion::arrow::compute::cast(batch.column(0), &DataType::Utf8)?;
            let names = names.as_string::<i32>();
            let ids = batch.column(1).as_primitive::<Int32Type>();
            for i in 0..batch.num_rows() {
                if names.is_valid(i) && ids.is_valid(i) {
                    oids.insert(names.value(i).to_string(), ids.value(i));
                }
            }
        }
        // The SQL spellings Postgres' type parser also accepts.
        for (alias, name) in [
            ("integer", "int4"),
            ("int", "int4"),
            ("smallint", "int2"),
            ("bigint", "int8"),
            ("real", "float4"),
            ("double precision", "float8"),
            ("boolean", "bool"),
            ("character varying", "varchar"),
            ("character", "bpchar"),
            ("timestamp without time zone", "timestamp"),
            ("timestamp with time zone", "timestamptz"),
            ("decimal", "numeric"),
        ] {
            if let Some(oid) = oids.get(name).copied() {
                oids.entry(alias.to_string()).or_insert(oid);
            }
        }
        Ok(Self {
            signature: Signature::string(1, Volatility::Stable),
            oids,
        })
    }

    fn oid(&self, name: &str) -> Option<i32> {
        let name = name.trim().trim_matches('"').to_lowercase();
        let name = name.strip_prefix("pg_catalog.").unwrap_or(&name);
        let (name, array) = match name.strip_suffix("[]") {
            Some(element) => (element.trim_end(), true),
            None => (name, false),
        };
        let name = if array {
            format!("_{name}")
        } else {
            name.to_string()
        };
        self.oids.get(&name).copied()
    }
}

impl ScalarUDFImpl for ToRegtype {
    fn name(&self) -> &str {
        "to_regtype"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int32)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let names = args.args[0].to_array(args.number_rows)?;
        let names = datafusion::arrow::compute::cast(&names, &DataType::Utf8)?;
        let oids: Int32Array = names
            .as_string::<i32>()
            .iter()
            .map(|name| name.and_then(|n| self.oid(n)))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(oids)))
    }
}
