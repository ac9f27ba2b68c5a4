//! Splits SQL text into statements at `;`, ignoring semicolons inside quotes and comments, and
//! says whether the text ends inside an unfinished statement (the shell then asks for more).

/// The complete statements of `text` (without their `;`) and what follows the last `;`.
///
/// Understands what DataFusion's SQL dialect does: `'…'` strings with `''` escapes, `E'…'`
/// strings with backslash escapes, `$tag$…$tag$` strings, `"…"` and `` `…` `` identifiers,
/// `--` comments and nested `/* … */` comments.
pub fn split(text: &str) -> (Vec<String>, String) {
    let mut statements = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            q @ (b'\'' | b'"' | b'`') => {
                let backslashes = q == b'\''
                    && i > 0
                    && matches!(bytes[i - 1], b'E' | b'e')
                    && (i < 2 || !ident(bytes[i - 2]));
                i += 1;
                while i < bytes.len() {
                    if backslashes && bytes[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if bytes[i] == q {
                        // A doubled quote is an escaped quote.
                        if bytes.get(i + 1) == Some(&q) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
            }
            b'$' if i == 0 || !ident(bytes[i - 1]) => {
                // `$tag$ … $tag$` (the tag may be empty; `$1` is a placeholder, not a quote).
                let tag_end = bytes[i + 1..]
                    .iter()
                    .position(|&b| !ident(b))
                    .map(|p| i + 1 + p);
                if let Some(te) = tag_end
                    && bytes[te] == b'$'
                    && !bytes.get(i + 1).is_some_and(u8::is_ascii_digit)
                {
                    let tag = &text[i..=te];
                    match text[te + 1..].find(tag) {
                        Some(p) => i = te + 1 + p + tag.len() - 1,
                        None => i = bytes.len(),
                    }
                }
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let mut depth = 1;
                i += 2;
                while i < bytes.len() && depth > 0 {
                    if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                    } else {
                        i += 1;
                    }
                }
                continue;
            }
            b';' => {
                let s = text[start..i].trim();
                if !is_blank(s) {
                    statements.push(s.to_string());
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    let rest = text.get(start..).unwrap_or("").to_string();
    (statements, rest)
}

/// Whether SQL text holds nothing but whitespace and comments.
pub fn is_blank(sql: &str) -> bool {
    strip_comments(sql).trim().is_empty()
}

/// `sql` without its `--` and `/* */` comments.
fn strip_comments(sql: &str) -> String {
    let mut out = String::new();
    let mut in_block = false;
    for line in sql.lines() {
        let mut l = line;
        loop {
            if in_block {
                match l.find("*/") {
                    Some(p) => {
                        l = &l[p + 2..];
                        in_block = false;
                    }
                    None => {
                        l = "";
                        break;
                    }
                }
            } else if let Some(p) = l.find("/*") {
                out.push_str(&l[..p]);
                l = &l[p + 2..];
                in_block = true;
            } else {
                break;
            }
        }
        let l = match l.find("--") {
            Some(p) => &l[..p],
            None => l,
        };
        out.push_str(l);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semicolons_in_quotes_and_comments_do_not_split() {
        let (s, rest) = split("SELECT ';', \"a;b\" -- c;\n FROM t; /* ; */ SELECT 'it''s;'; SEL");
        assert_eq!(
            s,
            vec![
                "SELECT ';', \"a;b\" -- c;\n FROM t".to_string(),
                "/* ; */ SELECT 'it''s;'".to_string()
            ]
        );
        assert_eq!(rest, " SEL");
    }

    #[test]
    fn escapes_dollar_quotes_backticks_and_nested_comments() {
        let texts = [
            r"SELECT E'it\'s;x'",
            "SELECT $$a;b$$",
            "SELECT $tag$ ; $ $tag$",
            "/* a /* b */ ; */ SELECT 1",
            "SELECT 1 AS `a;b`",
            "SELECT $1",
        ];
        for t in texts {
            let (s, rest) = split(&format!("{t}; SELECT 2;"));
            assert_eq!(s, vec![t.to_string(), "SELECT 2".to_string()], "{t}");
            assert_eq!(rest, "");
        }
    }

    #[test]
    fn empty_statements_are_dropped() {
        let (s, rest) = split(";; -- nothing\n;");
        assert!(s.is_empty());
        assert_eq!(rest, "");
        assert!(is_blank("  -- a comment\n /* another */ "));
        assert!(!is_blank("-- c\nSELECT 1"));
    }
}
