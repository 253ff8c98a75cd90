//! Text that a sender controls, made safe for a log line: control
//! characters (line breaks, escape codes) are written as `\n`, `\u{1b}`...,
//! so that a `MessageId` cannot forge a log line or drive a terminal.

use std::borrow::Cow;

pub fn escape(text: &str) -> Cow<'_, str> {
    if text.chars().any(char::is_control) {
        Cow::Owned(text.chars().flat_map(char::escape_default).collect())
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("id\nforged line"), "id\\nforged line");
        assert_eq!(escape("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert!(matches!(escape("plain-id"), Cow::Borrowed("plain-id")));
    }
}
