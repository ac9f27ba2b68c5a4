//! Output formats, defined once: parsing (`--format`, `\format`), and writing Arrow batches in
//! each of them.

use std::io::Write;

use anyhow::{Result, bail};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use comfy_table::{ContentArrangement, Table, presets};

/// How query results are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A boxed table that fits the terminal (the shell's default).
    Table,
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// A GitHub-flavoured markdown table.
    Markdown,
    /// A Parquet file (binary: redirect it to a file).
    Parquet,
    /// An Arrow IPC stream (binary: for pyarrow, Polars, DuckDB).
    Arrow,
}

impl Format {
    /// Every format with its name, for `\format` and help.
    pub const ALL: [Format; 7] = [
        Format::Table,
        Format::Csv,
        Format::Json,
        Format::Ndjson,
        Format::Markdown,
        Format::Parquet,
        Format::Arrow,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Format::Table => "table",
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Ndjson => "ndjson",
            Format::Markdown => "markdown",
            Format::Parquet => "parquet",
            Format::Arrow => "arrow",
        }
    }

    pub fn parse(name: &str) -> Result<Format> {
        match Format::ALL.iter().find(|f| f.name() == name.trim()) {
            Some(f) => Ok(*f),
            None => bail!(
                "unknown format {name:?}: use one of {}",
                Format::ALL.map(Format::name).join(", ")
            ),
        }
    }

    /// Whether the format is binary (never written to a terminal).
    pub fn is_binary(self) -> bool {
        matches!(self, Format::Parquet | Format::Arrow)
    }
}

/// How to lay out text formats.
#[derive(Debug, Clone, Copy)]
pub struct TextLayout {
    /// Terminal width to fit tables into (`None`: no limit).
    pub width: Option<u16>,
    /// One block per row, `column | value` lines (psql's `\x`).
    pub expanded: bool,
    /// Cells longer than this are cut with `…` in tables.
    pub max_cell: usize,
}

impl Default for TextLayout {
    fn default() -> Self {
        TextLayout {
            width: None,
            expanded: false,
            max_cell: 80,
        }
    }
}

fn cells(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for b in batches {
        let formatters = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for i in 0..b.num_rows() {
            rows.push(formatters.iter().map(|f| f.value(i).to_string()).collect());
        }
    }
    Ok(rows)
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.replace('\n', "↵");
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out.replace('\n', "↵")
}

/// Writes `batches` (all of `schema`) in `format`.
pub fn write(
    out: &mut dyn Write,
    format: Format,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    layout: TextLayout,
) -> Result<()> {
    match format {
        Format::Table if layout.expanded => write_expanded(out, schema, batches, layout)?,
        Format::Table => {
            let mut table = Table::new();
            table.load_preset(presets::UTF8_FULL_CONDENSED);
            table.set_content_arrangement(ContentArrangement::Dynamic);
            if let Some(w) = layout.width {
                table.set_width(w);
            }
            table.set_header(schema.fields().iter().map(|f| f.name().to_string()));
            for row in cells(batches)? {
                table.add_row(row.iter().map(|c| cut(c, layout.max_cell)));
            }
            writeln!(out, "{table}")?;
        }
        Format::Markdown => {
            let names: Vec<String> = schema
                .fields()
                .iter()
                .map(|f| f.name().to_string())
                .collect();
            writeln!(out, "| {} |", names.join(" | "))?;
            writeln!(out, "|{}", "---|".repeat(names.len()))?;
            for row in cells(batches)? {
                let row: Vec<String> = row
                    .iter()
                    .map(|c| c.replace('|', "\\|").replace('\n', " "))
                    .collect();
                writeln!(out, "| {} |", row.join(" | "))?;
            }
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            if batches.is_empty() {
                // A header even for no rows.
                w.write(&RecordBatch::new_empty(schema.clone()))?;
            }
            for b in batches {
                w.write(b)?;
            }
        }
        Format::Json => {
            let mut w = arrow::json::ArrayWriter::new(&mut *out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
            drop(w);
            writeln!(out)?;
        }
        Format::Ndjson => {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut *out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        Format::Parquet => {
            let mut buf = Vec::new();
            let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, schema.clone(), None)?;
            for b in batches {
                w.write(b)?;
            }
            w.close()?;
            out.write_all(&buf)?;
        }
        Format::Arrow => {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut *out, schema)?;
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
    }
    Ok(())
}

fn write_expanded(
    out: &mut dyn Write,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    layout: TextLayout,
) -> Result<()> {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let max = layout
        .width
        .map(|w| (w as usize).saturating_sub(width + 3).max(20))
        .unwrap_or(layout.max_cell * 4);
    for (i, row) in cells(batches)?.iter().enumerate() {
        writeln!(
            out,
            "-[ RECORD {} ]{}",
            i + 1,
            "-".repeat(width.saturating_sub(8))
        )?;
        for (name, value) in names.iter().zip(row) {
            writeln!(out, "{name:<width$} | {}", cut(value, max))?;
        }
    }
    Ok(())
}
