//! Text as both databases can hold it. PostgreSQL `text` cannot hold the NUL
//! character, and any remote mail server can put one into its SMTP answer
//! (a bounce's `diagnosticCode`), as can a `Subject`. Every text column a
//! message fills is written through [`storable`], on both backends alike, so
//! that one message reads the same whichever database holds it. The SNS body
//! itself is kept byte-exact: JSON escapes a NUL (`\u0000`), so a body never
//! holds one.

use std::borrow::Cow;

/// The text with each NUL written as the six characters `\u0000`, as JSON
/// writes it; everything else unchanged (and not copied).
pub fn storable(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\\u0000"))
    } else {
        Cow::Borrowed(text)
    }
}

/// [`storable`] for an optional column.
pub fn storable_opt(text: Option<&str>) -> Option<String> {
    text.map(|t| storable(t).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_escaped_and_other_text_is_untouched() {
        assert_eq!(
            storable("550 5.1.1 \0user unknown"),
            "550 5.1.1 \\u0000user unknown"
        );
        assert!(matches!(storable("plain é"), Cow::Borrowed("plain é")));
    }
}
