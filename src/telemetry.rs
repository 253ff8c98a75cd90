//! Logging: `tracing` to stdout, as text or JSON, set up once per process;
//! and [`escaped`], which every log field holding text a sender controls
//! goes through, so that a log line stays one line of plain text.

use std::fmt;
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: a log file or journal gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal());
    // A second call (tests start many apps in one process) keeps the first.
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// `text` as a log field (`field = %escaped(text)`): line breaks, ESC and
/// every other C0 and C1 control character, DEL, the Unicode line and
/// paragraph separators and the bidirectional controls are written as
/// `\n`, `\r`, `\t` or `\u{..}`, and a backslash as `\\`. A sender (a
/// `MessageId`, a `TopicArn`, anything from a body) can then neither forge a
/// log line nor drive the operator's terminal, and the escaped text reads
/// back unambiguously. Nothing is allocated.
pub fn escaped(text: &str) -> Escaped<'_> {
    Escaped(text)
}

pub struct Escaped<'a>(&'a str);

fn needs_escape(c: char) -> bool {
    c.is_control()
        || c == '\\'
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(needs_escape) {
            f.write_str(&rest[..at])?;
            let Some(c) = rest[at..].chars().next() else {
                break;
            };
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                '\\' => f.write_str("\\\\")?,
                other => write!(f, "\\u{{{:x}}}", u32::from(other))?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::escaped;

    #[test]
    fn what_a_sender_controls_stays_on_one_plain_line() {
        for (raw, shown) in [
            ("plain-id-123", "plain-id-123"),
            ("a\nINFO forged", "a\\nINFO forged"),
            ("a\r\nb\tc", "a\\r\\nb\\tc"),
            (
                "\u{1b}[2J\u{1b}]0;title\u{7}",
                "\\u{1b}[2J\\u{1b}]0;title\\u{7}",
            ),
            (
                "nul\0del\u{7f}c1\u{85}\u{9b}",
                "nul\\u{0}del\\u{7f}c1\\u{85}\\u{9b}",
            ),
            ("line\u{2028}sep", "line\\u{2028}sep"),
            ("bidi\u{202e}txt", "bidi\\u{202e}txt"),
            ("back\\nslash", "back\\\\nslash"),
            ("héllo wörld ✓", "héllo wörld ✓"),
        ] {
            let out = escaped(raw).to_string();
            assert_eq!(out, shown, "{raw:?}");
            assert!(!out.chars().any(char::is_control), "{out:?}");
        }
    }
}
