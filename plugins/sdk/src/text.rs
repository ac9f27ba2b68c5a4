//! Text forms that many inputs share and that are easy to get almost right: CSV as pandas and
//! Python's `csv` write it, and JSON with Python's bare non-finite numbers. Plain functions, so
//! plugins (and the host) use one tested copy.

use std::borrow::Cow;

/// Splits CSV text into records, each with the line it starts on (1-based): quotes, doubled
/// quotes and newlines inside quotes are allowed, `\r\n` line ends too; a last line without a
/// newline is a record.
pub fn csv_records(text: &str) -> Vec<(u64, Vec<String>)> {
    let mut out = Vec::new();
    let mut row = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut line, mut start_line) = (false, 1u64, 1u64);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => row.push(std::mem::take(&mut cur)),
            '\n' if !quoted => {
                row.push(std::mem::take(&mut cur));
                out.push((start_line, std::mem::take(&mut row)));
                line += 1;
                start_line = line;
            }
            '\r' if !quoted => {}
            c => {
                if c == '\n' {
                    line += 1;
                }
                cur.push(c)
            }
        }
    }
    if !cur.is_empty() || !row.is_empty() {
        row.push(cur);
        out.push((start_line, row));
    }
    out
}

/// The fields of one CSV line (quotes allowed, as pandas writes them); an empty line is one
/// empty field.
pub fn csv_fields(line: &str) -> Vec<String> {
    csv_records(line)
        .into_iter()
        .next()
        .map_or_else(|| vec![String::new()], |(_, fields)| fields)
}

/// Rewrites Python's bare `NaN`, `Infinity` and `-Infinity` outside JSON strings as the strings
/// `"NaN"`, `"Infinity"`, `"-Infinity"`, so that a JSON parser reads them. Text without them
/// is returned as it is.
pub fn quote_non_finite(text: &str) -> Cow<'_, str> {
    if !text.contains("NaN") && !text.contains("Infinity") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let token = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t));
        match token {
            Some(t) => {
                out.push('"');
                out.push_str(t);
                out.push('"');
                rest = &rest[t.len()..];
            }
            None => {
                if c == '"' {
                    in_string = true;
                }
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_newlines_and_line_numbers() {
        let text = "a,b\n\"x,1\",\"say \"\"hi\"\"\"\n\"two\nlines\",3\r\nlast,";
        let r = csv_records(text);
        assert_eq!(r[0], (1, vec!["a".to_string(), "b".to_string()]));
        assert_eq!(r[1], (2, vec!["x,1".to_string(), "say \"hi\"".to_string()]));
        assert_eq!(r[2], (3, vec!["two\nlines".to_string(), "3".to_string()]));
        assert_eq!(r[3], (5, vec!["last".to_string(), String::new()]));
        assert_eq!(csv_fields(""), vec![String::new()]);
        assert_eq!(
            csv_fields("1,\"a,b\""),
            vec!["1".to_string(), "a,b".to_string()]
        );
    }

    #[test]
    fn bare_non_finite_tokens_become_strings_outside_strings_only() {
        assert_eq!(
            quote_non_finite(
                r#"{"a": NaN, "b": -Infinity, "c": "NaN \"Infinity\"", "d": [Infinity]}"#
            ),
            r#"{"a": "NaN", "b": "-Infinity", "c": "NaN \"Infinity\"", "d": ["Infinity"]}"#
        );
        assert!(matches!(quote_non_finite(r#"{"a":1}"#), Cow::Borrowed(_)));
        assert_eq!(quote_non_finite("[\"é\", NaN]"), "[\"é\", \"NaN\"]");
    }
}
