//! Rendering of text that a peer chose (certificate names, decline reasons, federation ids, error texts) for a log
//! line or an error message: control characters are escaped, so a peer cannot start a forged log line, and the
//! text is truncated, so a peer cannot make the coordinator echo megabytes.

use std::fmt;

/// The most characters of untrusted text shown; the rest is summarised as `…(N more bytes)`.
pub const MAX_SHOWN_CHARS: usize = 200;

/// The longest rendering of any untrusted text by [`Untrusted`], in bytes: every shown character escapes to at
/// most 10 bytes (`\u{10ffff}`), plus the truncation note.
pub const MAX_RENDERED_BYTES: usize = MAX_SHOWN_CHARS * 10 + 40;

/// Untrusted text, displayed escaped and truncated to [`MAX_SHOWN_CHARS`] characters. The rendering never holds
/// a control character (nor a Unicode line or paragraph separator, nor a bidirectional override), and is at most
/// [`MAX_RENDERED_BYTES`] long. A backslash is doubled, so an escape in the output always comes from this type.
#[derive(Debug, Clone, Copy)]
pub struct Untrusted<'a>(pub &'a str);

/// Whether a character could break or disguise a log line.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        render(f, self.0, MAX_SHOWN_CHARS)
    }
}

/// Untrusted text like [`Untrusted`], showing up to the given number of characters (for whole error texts that
/// embed peer text, whose own words may be longer than [`MAX_SHOWN_CHARS`]); the rendering is at most
/// `10 × chars + 40` bytes.
#[derive(Debug, Clone, Copy)]
pub struct UntrustedUpTo<'a>(pub &'a str, pub usize);

impl fmt::Display for UntrustedUpTo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        render(f, self.0, self.1)
    }
}

fn render(f: &mut fmt::Formatter<'_>, text: &str, max_chars: usize) -> fmt::Result {
    let mut shown_bytes = 0;
    for (i, c) in text.chars().enumerate() {
        if i == max_chars {
            return write!(f, "…({} more bytes)", text.len() - shown_bytes);
        }
        match c {
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if needs_escape(c) => write!(f, "\\u{{{:x}}}", u32::from(c))?,
            c => write!(f, "{c}")?,
        }
        shown_bytes += c.len_utf8();
    }
    Ok(())
}

/// [`Untrusted`] rendered to a string.
pub fn escape(text: &str) -> String {
    Untrusted(text).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_newline_cannot_start_a_line() {
        assert_eq!(escape("busy\n2025-01-01T00:00:00Z  INFO forged"), "busy\\n2025-01-01T00:00:00Z  INFO forged");
        assert_eq!(escape("a\r\u{1b}[31mred\u{2028}b\\n"), "a\\r\\u{1b}[31mred\\u{2028}b\\\\n");
        assert_eq!(escape("hospital-a"), "hospital-a");
    }

    #[test]
    fn long_text_is_truncated_with_its_length() {
        let shown = escape(&"x".repeat(3_900_000));
        assert!(shown.starts_with(&"x".repeat(MAX_SHOWN_CHARS)), "{shown}");
        assert!(shown.ends_with(&format!("…({} more bytes)", 3_900_000 - MAX_SHOWN_CHARS)), "{shown}");
    }

    proptest! {
        #[test]
        fn the_rendering_has_no_control_character_and_is_bounded(text in "\\PC*|[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}\\u{2028}\\\\a-z]{0,600}") {
            let shown = escape(&text);
            prop_assert!(!shown.chars().any(needs_escape), "{:?}", shown);
            prop_assert!(shown.len() <= MAX_RENDERED_BYTES, "{} bytes", shown.len());
            if text.chars().count() <= MAX_SHOWN_CHARS && !text.chars().any(|c| c == '\\' || needs_escape(c)) {
                prop_assert_eq!(shown, text);
            }
        }
    }
}
