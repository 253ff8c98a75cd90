//! Logging: `tracing` as text or JSON, set up once per process: to stdout
//! for `serve`, to stderr for the other commands (their stdout is their
//! answer: a CSV export, a status a script reads).
//! `LOG_LEVEL` is checked when the settings are read; colours only go to a
//! terminal; the AWS SDK and sqlx are kept at `warn` unless `LOG_LEVEL`
//! names them (their `info` lines are a credential-chain dump and a notice
//! per migration check, not news for an operator), and a client's broken
//! connection is not logged above `debug`.
//!
//! [`escaped`]: every log field holding text a sender controls goes
//! through it, so that a log line stays one line of plain text.

use std::fmt;
use std::io::IsTerminal;

use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::log_pipe::{LogPipe, LogPipeGuard};

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Libraries whose `info` is noise for an operator.
const QUIET: [&str; 5] = [
    "aws_config",
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_sdk_sns",
    "sqlx",
];

/// actix-http logs a client's malformed request or dropped connection at
/// `error`, once per connection, and rustls a client's refused TLS (a
/// renegotiation, a broken handshake) at `warn`, once per attempt: anyone
/// who reaches the public listener could fill the log with them. They are
/// the client's faults, answered 400 or closed, so they show only at
/// `debug` and `trace` or when `LOG_LEVEL` names them. (bouncer's own TLS
/// calls, outbound, report their failures as errors of their own.)
const CLIENT_FAULTS: [&str; 2] = ["actix_http::h1::dispatcher", "rustls"];

/// `LOG_LEVEL` as clap reads it: a level, or EnvFilter directives whose bare
/// words are levels (a bare `inof` would silently be a target named `inof`).
pub fn parse_log_level(text: &str) -> Result<String, String> {
    let hint = "a level (trace, debug, info, warn, error, off), optionally with target=level pairs, e.g. `info,bouncer=debug`";
    for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains(['=', '[', ':']);
        if bare && !LEVELS.contains(&directive.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "LOG_LEVEL `{text}`: `{directive}` is not a level; expected {hint}"
            ));
        }
    }
    EnvFilter::try_new(text).map_err(|e| format!("LOG_LEVEL `{text}` is not {hint}: {e}"))?;
    Ok(text.to_owned())
}

/// The filter: `LOG_LEVEL`, with the quiet libraries at `warn` (or at the
/// global level when that is quieter) unless it names them.
pub fn filter_directives(level: &str) -> String {
    let directives: Vec<&str> = level
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    let global = directives
        .iter()
        .rev()
        .find(|d| !d.contains('='))
        .map(|d| d.to_ascii_lowercase());
    let quiet = match global.as_deref() {
        Some(l @ ("error" | "off")) => l.to_owned(),
        _ => "warn".to_owned(),
    };
    let named = |target: &str| {
        directives.iter().any(|d| {
            d.split(['=', '[']).next().is_some_and(|t| {
                t == target
                    || t.starts_with(&format!("{target}::"))
                    || target.starts_with(&format!("{t}::"))
            })
        })
    };
    let mut out: Vec<String> = directives.iter().map(|d| (*d).to_owned()).collect();
    for target in QUIET {
        if !named(target) {
            out.push(format!("{target}={quiet}"));
        }
    }
    if !matches!(global.as_deref(), Some("debug" | "trace")) {
        for target in CLIENT_FAULTS {
            if !named(target) {
                out.push(format!("{target}=off"));
            }
        }
    }
    out.join(",")
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTo {
    Stdout,
    Stderr,
}

/// Sets up logging to stdout (the service). A second call (tests start
/// many apps in one process) keeps the first.
pub fn init(level: &str, format: LogFormat) -> Option<LogGuard> {
    init_to(level, format, LogTo::Stdout)
}

/// The pipe of the service's log, once set up.
static PIPE: OnceLock<LogPipe> = OnceLock::new();

/// Lines of the service's log left out so far because its standard output
/// did not take them (a log reader stopped, too slow, or gone).
pub fn log_lines_dropped() -> u64 {
    PIPE.get().map_or(0, LogPipe::dropped)
}

/// Keep until the process ends: dropping it waits a little for the lines
/// still held to be written.
pub struct LogGuard(#[allow(dead_code)] LogPipeGuard);

/// Sets up logging to `to`, with colours only when that is a terminal. An
/// invalid `level` (refused earlier by the settings) falls back to `info`.
///
/// The service's lines (standard output) go through a thread of their own
/// ([`crate::log_pipe`]); commands (standard error) write directly: they
/// are short, and their lines are their answer.
pub fn init_to(level: &str, format: LogFormat, to: LogTo) -> Option<LogGuard> {
    let filter = EnvFilter::try_new(filter_directives(level))
        .unwrap_or_else(|_| EnvFilter::new(filter_directives("info")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match to {
        LogTo::Stdout => {
            let ansi = std::io::stdout().is_terminal();
            let Ok((pipe, guard)) = LogPipe::to_stdout() else {
                // No thread to be had: write directly.
                let _ = match format {
                    LogFormat::Json => builder.json().try_init(),
                    LogFormat::Text => builder.with_ansi(ansi).try_init(),
                };
                return None;
            };
            let set = match format {
                LogFormat::Json => builder.json().with_writer(pipe.clone()).try_init(),
                LogFormat::Text => builder.with_ansi(ansi).with_writer(pipe.clone()).try_init(),
            };
            // A second call's pipe is not the one in use.
            set.ok().map(|()| {
                let _ = PIPE.set(pipe);
                LogGuard(guard)
            })
        }
        LogTo::Stderr => {
            let _ = match format {
                LogFormat::Json => builder.json().with_writer(std::io::stderr).try_init(),
                LogFormat::Text => builder
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr)
                    .try_init(),
            };
            None
        }
    }
}

/// `text` as a log field (`field = %escaped(text)`): line breaks, ESC and
/// every other C0 and C1 control character, DEL, the Unicode line and
/// paragraph separators and the bidirectional controls are written as
/// `\n`, `\r`, `\t` or `\u{..}`, and a backslash as `\\`. A sender (a
/// `MessageId`, a `TopicArn`, anything from a body) can then neither forge a
/// log line nor drive the operator's terminal, and the escaped text reads
/// back unambiguously. Nothing is allocated.
pub fn escaped(text: &str) -> Escaped<'_> {
    Escaped {
        text,
        word: false,
        max_bytes: usize::MAX,
    }
}

/// [`escaped`], and spaces, `"`, `=` and every character beyond ASCII as
/// `\u{20}`, `\u{22}`, `\u{3d}`, `\u{..}` too: for a field that is one
/// ASCII word when real (an SNS `MessageId`, `Type`, `TopicArn`), so that in
/// a text log line its value cannot pose as the line's other fields
/// (`x outcome="stored"`), even with look-alikes (a no-break space, a
/// fullwidth `＝`).
pub fn escaped_word(text: &str) -> Escaped<'_> {
    Escaped {
        text,
        word: true,
        max_bytes: usize::MAX,
    }
}

pub struct Escaped<'a> {
    text: &'a str,
    word: bool,
    max_bytes: usize,
}

impl Escaped<'_> {
    /// Written to at most `max_bytes` once escaped, cut at a character or
    /// before an escape, never inside one: an escaped character takes up to
    /// ten bytes, so a cut before escaping would not bound the line.
    pub fn within(self, max_bytes: usize) -> Self {
        Escaped { max_bytes, ..self }
    }
}

/// Writes what fits of the bytes left; false once something did not fit.
fn fits(f: &mut fmt::Formatter<'_>, left: &mut usize, text: &str) -> Result<bool, fmt::Error> {
    if text.len() <= *left {
        f.write_str(text)?;
        *left -= text.len();
        return Ok(true);
    }
    f.write_str(&text[..text.floor_char_boundary(*left)])?;
    *left = 0;
    Ok(false)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || c == '\\'
        || matches!(
            c,
            // The line and paragraph separators; the bidirectional controls.
            '\u{2028}' | '\u{2029}' | '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
            // Characters that show as nothing (Unicode's format characters,
            // and the fillers): a `Type` of `Notification` with a
            // zero-width space in it read as `Notification`.
            | '\u{ad}' | '\u{34f}' | '\u{600}'..='\u{605}' | '\u{6dd}' | '\u{70f}'
            | '\u{115f}' | '\u{1160}' | '\u{17b4}' | '\u{17b5}' | '\u{180b}'..='\u{180f}'
            | '\u{200b}'..='\u{200d}' | '\u{2060}'..='\u{2065}' | '\u{206a}'..='\u{206f}'
            | '\u{3164}' | '\u{fe00}'..='\u{fe0f}' | '\u{feff}' | '\u{ffa0}' | '\u{fff0}'..='\u{fffb}'
            | '\u{1d173}'..='\u{1d17a}' | '\u{e0000}'..='\u{e0fff}'
        )
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = self.word;
        let mut left = self.max_bytes;
        let mut rest = self.text;
        while let Some(at) = rest.find(|c: char| {
            needs_escape(c) || (word && (!c.is_ascii() || matches!(c, ' ' | '"' | '=')))
        }) {
            if !fits(f, &mut left, &rest[..at])? {
                return Ok(());
            }
            let Some(c) = rest[at..].chars().next() else {
                break;
            };
            let short = match c {
                '\n' => Some("\\n"),
                '\r' => Some("\\r"),
                '\t' => Some("\\t"),
                '\\' => Some("\\\\"),
                _ => None,
            };
            let code = u32::from(c);
            // `\u{` and `}` around the code's hex digits.
            let hex_digits = ((32 - code.leading_zeros()).div_ceil(4)).max(1) as usize;
            let len = short.map_or(4 + hex_digits, str::len);
            if len > left {
                return Ok(());
            }
            match short {
                Some(short) => f.write_str(short)?,
                None => write!(f, "\\u{{{code:x}}}")?,
            }
            left -= len;
            rest = &rest[at + c.len_utf8()..];
        }
        fits(f, &mut left, rest).map(|_| ())
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_word_cannot_pose_as_other_fields_and_every_bidi_control_is_escaped() {
        assert_eq!(
            escaped_word("x outcome=\"stored\"").to_string(),
            "x\\u{20}outcome\\u{3d}\\u{22}stored\\u{22}"
        );
        assert_eq!(escaped("a b=\"c\"").to_string(), "a b=\"c\"");
        assert_eq!(escaped("\u{61c}\u{202e}").to_string(), "\\u{61c}\\u{202e}");
        // Nothing that shows as nothing.
        assert_eq!(
            escaped("a\u{200b}b\u{feff}\u{ad}\u{2060}\u{e0001}é").to_string(),
            "a\\u{200b}b\\u{feff}\\u{ad}\\u{2060}\\u{e0001}é"
        );
        // A word is ASCII: look-alikes are escaped.
        assert_eq!(
            escaped_word("x\u{a0}outcome\u{ff1d}\u{201d}stored").to_string(),
            "x\\u{a0}outcome\\u{ff1d}\\u{201d}stored"
        );
    }

    #[test]
    fn a_field_within_a_size_is_cut_between_characters_or_escapes() {
        let cut = |text: &str, max: usize| escaped_word(text).within(max).to_string();
        assert_eq!(cut("abcdef", 4), "abcd");
        assert_eq!(cut("ab\u{202e}cd", 10), "ab\\u{202e}");
        // An escape that does not fit whole is left out.
        assert_eq!(cut("ab\u{202e}cd", 9), "ab");
        assert_eq!(cut("a b", 5), "a");
        assert_eq!(cut("a\nb", 3), "a\\n");
        assert_eq!(cut("\u{0}", 5), "\\u{0}");
        assert_eq!(cut("\u{2069}\u{85}", 13), "\\u{2069}");
        // A character is not split.
        assert_eq!(cut("aé", 2), "a");
        // A thousand escaped characters are 256 bytes at most.
        assert!(cut(&"\u{202e}".repeat(1000), 256).len() <= 256);
        assert_eq!(cut("short", 256), "short");
    }

    #[test]
    fn a_misspelt_level_is_refused_and_a_target_with_a_level_is_not() {
        assert!(parse_log_level("inof").is_err());
        assert!(parse_log_level("info,bouncer=debug").is_ok());
        assert!(parse_log_level("WARN").is_ok());
        assert!(parse_log_level("bouncer=[").is_err());
    }

    #[test]
    fn libraries_stay_at_warn_unless_named() {
        assert_eq!(
            filter_directives("debug,sqlx=info"),
            "debug,sqlx=info,aws_config=warn,aws_smithy_runtime=warn,aws_smithy_runtime_api=warn,aws_sdk_sns=warn"
        );
        assert!(filter_directives("error").contains(",sqlx=error"));
        assert!(filter_directives("bouncer=debug").starts_with("bouncer=debug,aws_config=warn"));
    }

    #[test]
    fn a_clients_connection_faults_show_only_at_debug_or_when_named() {
        for level in ["info", "error"] {
            assert!(
                filter_directives(level).ends_with(",actix_http::h1::dispatcher=off,rustls=off"),
                "{level}"
            );
        }
        assert!(!filter_directives("debug").contains("actix_http"));
        assert!(!filter_directives("TRACE").contains("rustls"));
        assert!(filter_directives("info,rustls=warn").ends_with(",actix_http::h1::dispatcher=off"));
        assert_eq!(
            filter_directives("info,actix_http=error")
                .matches("actix_http")
                .count(),
            1
        );
        assert_eq!(
            filter_directives("info,actix_http::h1::dispatcher=warn")
                .matches("actix_http")
                .count(),
            1
        );
    }

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
