//! Learning curves as pictures: a terminal chart drawn with braille dots (2×4 per character,
//! one colour per run), or an SVG file; and `runql plot` / `\plot`, which picks the runs and
//! reads their curves.

use std::fmt::Write;
use std::io::IsTerminal;

use anyhow::{Context, Result, bail};
use runql_query::Engine;
use tokio::runtime::Runtime;

use crate::query::{collect, quote, resolve_run, strings, tail, terminal_width};

/// One curve: a label and its (x, y) points.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// ANSI colours for up to eight series, then they repeat.
const COLORS: [&str; 8] = [
    "\x1b[34m", "\x1b[31m", "\x1b[32m", "\x1b[33m", "\x1b[35m", "\x1b[36m", "\x1b[94m", "\x1b[91m",
];
const RESET: &str = "\x1b[0m";
/// The same colours for SVG.
const SVG_COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#bcbd22", "#9467bd", "#17becf", "#4e79a7", "#e15759",
];

fn bounds(series: &[Series]) -> Option<(f64, f64, f64, f64)> {
    let pts = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    let mut any = false;
    for (x, y) in pts {
        any = true;
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    if !any {
        return None;
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    Some((x0, x1, y0, y1))
}

/// A chart `width` × `height` characters (plus axis labels and a legend).
pub fn terminal(
    title: &str,
    series: &[Series],
    width: usize,
    height: usize,
    color: bool,
) -> String {
    let Some((x0, x1, y0, y1)) = bounds(series) else {
        return format!("{title}: nothing to plot\n");
    };
    let (w, h) = (width.max(10), height.max(4));
    let (dw, dh) = (w * 2, h * 4);
    // Per cell: the braille bits and the series that drew there last.
    let mut cells = vec![(0u8, usize::MAX); w * h];
    for (si, s) in series.iter().enumerate() {
        let mut prev: Option<(i64, i64)> = None;
        for (x, y) in s
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
        {
            let px = (((x - x0) / (x1 - x0)) * (dw - 1) as f64).round() as i64;
            let py = (((y1 - y) / (y1 - y0)) * (dh - 1) as f64).round() as i64;
            // Join consecutive points so a sparse curve is still a line.
            let (sx, sy) = prev.unwrap_or((px, py));
            let steps = (px - sx).abs().max((py - sy).abs()).max(1);
            for k in 0..=steps {
                let qx = sx + (px - sx) * k / steps;
                let qy = sy + (py - sy) * k / steps;
                let (cx, cy) = ((qx / 2) as usize, (qy / 4) as usize);
                if cx >= w || cy >= h {
                    continue;
                }
                let bit = match ((qx % 2) as usize, (qy % 4) as usize) {
                    (0, 0) => 0x01,
                    (0, 1) => 0x02,
                    (0, 2) => 0x04,
                    (1, 0) => 0x08,
                    (1, 1) => 0x10,
                    (1, 2) => 0x20,
                    (0, _) => 0x40,
                    _ => 0x80,
                };
                let c = &mut cells[cy * w + cx];
                c.0 |= bit;
                c.1 = si;
            }
            prev = Some((px, py));
        }
    }
    let label = |v: f64| format!("{v:.4}");
    let margin = label(y1).len().max(label(y0).len());
    let mut out = String::new();
    let _ = writeln!(out, "{title}");
    for row in 0..h {
        let axis = if row == 0 {
            label(y1)
        } else if row == h - 1 {
            label(y0)
        } else {
            String::new()
        };
        let _ = write!(out, "{axis:>margin$} ┤");
        for col in 0..w {
            let (bits, si) = cells[row * w + col];
            if bits == 0 {
                out.push(' ');
                continue;
            }
            let ch = char::from_u32(0x2800 + u32::from(bits)).unwrap_or('·');
            if color {
                let _ = write!(out, "{}{ch}{RESET}", COLORS[si % COLORS.len()]);
            } else {
                out.push(ch);
            }
        }
        out.push('\n');
    }
    let _ = writeln!(out, "{:margin$} └{}", "", "─".repeat(w));
    let (l, r) = (format!("{x0}"), format!("{x1}"));
    let _ = writeln!(
        out,
        "{:margin$}  {l}{:>pad$}",
        "",
        r,
        pad = w.saturating_sub(l.len())
    );
    for (si, s) in series.iter().enumerate() {
        if color {
            let _ = writeln!(out, "  {}━━{RESET} {}", COLORS[si % COLORS.len()], s.label);
        } else {
            let _ = writeln!(out, "  [{}] {}", si + 1, s.label);
        }
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The chart as a standalone SVG document.
pub fn svg(title: &str, x_label: &str, series: &[Series]) -> String {
    let (w, h, m) = (800.0, 450.0, 60.0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{m}" y="24" font-size="15">{}</text>"#,
        escape(title)
    );
    if let Some((x0, x1, y0, y1)) = bounds(series) {
        let (pw, ph) = (w - 2.0 * m, h - 2.0 * m);
        let sx = |x: f64| m + (x - x0) / (x1 - x0) * pw;
        let sy = |y: f64| m + (y1 - y) / (y1 - y0) * ph;
        let _ = writeln!(
            out,
            r##"<path d="M{m} {m} V{} H{}" fill="none" stroke="#444"/>"##,
            m + ph,
            m + pw
        );
        for (v, y) in [(y1, m), (y0, m + ph)] {
            let _ = writeln!(
                out,
                r#"<text x="{}" y="{}" text-anchor="end">{v:.4}</text>"#,
                m - 6.0,
                y + 4.0
            );
        }
        for (v, x) in [(x0, m), (x1, m + pw)] {
            let _ = writeln!(
                out,
                r#"<text x="{x}" y="{}" text-anchor="middle">{v}</text>"#,
                m + ph + 18.0
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            m + pw / 2.0,
            m + ph + 36.0,
            escape(x_label)
        );
        for (si, s) in series.iter().enumerate() {
            let color = SVG_COLORS[si % SVG_COLORS.len()];
            let pts: Vec<String> = s
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
                .collect();
            let _ = writeln!(
                out,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"><title>{}</title></polyline>"#,
                pts.join(" "),
                escape(&s.label)
            );
            let _ = writeln!(
                out,
                r#"<text x="{}" y="{}" fill="{color}">━ {}</text>"#,
                w - m - 180.0,
                m + 16.0 * (si as f64 + 1.0),
                escape(&s.label)
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

/// Draws `key` for some runs (the latest five that logged it by default): a terminal chart,
/// or an SVG written to `out`. Returns what to print.
pub fn command(
    rt: &Runtime,
    engine: &Engine,
    key: &str,
    prefixes: &[String],
    out: Option<&std::path::Path>,
) -> Result<String> {
    let ids: Vec<String> = if prefixes.is_empty() {
        let (_, b) = rt.block_on(collect(
            engine,
            &format!(
                "SELECT s.run_id FROM metric_summary s JOIN runs r USING (project, run_id) \
                 WHERE s.key = {} ORDER BY r.created DESC, s.run_id LIMIT 5",
                quote(key)
            ),
        ))?;
        strings(&b, 0)
    } else {
        prefixes
            .iter()
            .map(|p| resolve_run(rt, engine, p))
            .collect::<Result<_>>()?
    };
    if ids.is_empty() {
        bail!(
            "no run logged a metric named {key:?}; `\\d metric_summary` or SELECT DISTINCT key FROM metric_summary lists them"
        );
    }
    let width = terminal_width()
        .unwrap_or(100)
        .saturating_sub(14)
        .clamp(20, 160) as usize;
    let points = if out.is_some() { 1000 } else { width * 2 };
    let list = ids.iter().map(|i| quote(i)).collect::<Vec<_>>().join(", ");
    let (_, rows) = rt.block_on(collect(
        engine,
        &format!(
            "SELECT c.run_id, coalesce(r.name, c.run_id) AS name, c.step, c.value \
             FROM curves({points}) c JOIN runs r USING (project, run_id) \
             WHERE c.key = {} AND c.run_id IN ({list}) ORDER BY c.run_id, c.step",
            quote(key)
        ),
    ))?;
    let mut series: Vec<Series> = Vec::new();
    for b in &rows {
        let run = arrow::array::AsArray::as_string::<i32>(b.column(0));
        let name = arrow::array::AsArray::as_string::<i32>(b.column(1));
        let step = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(b.column(2));
        let value =
            arrow::array::AsArray::as_primitive::<arrow::datatypes::Float64Type>(b.column(3));
        for i in 0..b.num_rows() {
            let label = format!("{} …{}", name.value(i), tail(run.value(i), 6));
            if series.last().is_none_or(|s| s.label != label) {
                series.push(Series {
                    label,
                    points: Vec::new(),
                });
            }
            if let Some(s) = series.last_mut() {
                s.points.push((step.value(i) as f64, value.value(i)));
            }
        }
    }
    match out {
        Some(path) => {
            if path.extension().and_then(|e| e.to_str()) != Some("svg") {
                bail!(
                    "--out writes SVG: give a file name ending in .svg, not {}",
                    path.display()
                );
            }
            std::fs::write(path, svg(key, "step", &series))
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(format!(
                "wrote {} ({} runs)\n",
                path.display(),
                series.len()
            ))
        }
        None => Ok(terminal(
            key,
            &series,
            width,
            16,
            std::io::stdout().is_terminal(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn falling() -> Series {
        Series {
            label: "run a".into(),
            points: (0..100)
                .map(|s| (s as f64, 1.0 / (s as f64 + 1.0)))
                .collect(),
        }
    }

    #[test]
    fn terminal_charts_have_the_asked_size_and_a_legend() {
        let chart = terminal("loss", &[falling()], 40, 8, false);
        let lines: Vec<&str> = chart.lines().collect();
        assert_eq!(lines[0], "loss");
        assert_eq!(lines.len(), 1 + 8 + 2 + 1);
        assert!(lines[1].starts_with("1.0000 ┤"), "{chart}");
        assert!(chart.contains("[1] run a"));
        // The curve starts top-left: the first plotted cell is on the first row.
        assert!(lines[1].chars().skip(8).any(|c| c != ' '), "{chart}");
    }

    #[test]
    fn svgs_have_one_polyline_per_series() {
        let mut b = falling();
        b.label = "run <b>".into();
        let doc = svg("loss", "step", &[falling(), b]);
        assert_eq!(doc.matches("<polyline").count(), 2);
        assert!(doc.contains("run &lt;b&gt;"));
        assert!(doc.ends_with("</svg>\n"));
    }

    #[test]
    fn nothing_to_plot_says_so() {
        let empty = Series {
            label: "x".into(),
            points: vec![(0.0, f64::NAN)],
        };
        assert!(terminal("t", &[empty], 20, 5, false).contains("nothing to plot"));
    }
}
