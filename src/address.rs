//! `EmailAddress`: a recipient address in the one normalized form bouncer
//! stores and looks up. Normalizing: take what is inside the last `<...>` if
//! there is one (dropping a display name such as `"Jane" <jane@x.com>`),
//! trim white space, lower-case (Unicode). The result must have a non-empty
//! local part and domain around a single `@` (exactly one), and no white space.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct EmailAddress(String);

/// Longer than this (in bytes) is no address: SMTP allows 64 for the
/// local part and 255 for the domain.
const MAX_LEN: usize = 320;

#[derive(Debug, thiserror::Error)]
#[error("`{shown}` is not an email address{why}")]
pub struct InvalidAddress {
    /// The input, cut (and marked `…`) where it is long.
    shown: String,
    why: &'static str,
}

impl InvalidAddress {
    fn of(input: &str, why: &'static str) -> Self {
        let mut shown: String = input.chars().take(MAX_LEN).collect();
        if shown.len() < input.len() {
            shown.push('…');
        }
        InvalidAddress { shown, why }
    }
}

impl EmailAddress {
    pub fn parse(input: &str) -> Result<Self, InvalidAddress> {
        let invalid = || InvalidAddress::of(input, "");
        let mut text = input.trim();
        if let (Some(open), Some(close)) = (text.rfind('<'), text.rfind('>')) {
            if open < close {
                text = text[open + 1..close].trim();
            } else {
                return Err(invalid());
            }
        }
        let text = text.trim_matches(|c: char| c.is_whitespace());
        if text.len() > MAX_LEN {
            return Err(InvalidAddress::of(input, " (longer than 320 bytes)"));
        }
        if text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
        {
            return Err(invalid());
        }
        // Exactly one `@`: quoted local parts holding an `@` are not worth
        // the ambiguity they bring to a suppression list.
        let (local, domain) = text.split_once('@').ok_or_else(invalid)?;
        if local.is_empty() || domain.is_empty() || domain.contains('@') {
            return Err(invalid());
        }
        // Lower case can be longer (`Ⱥ` is two bytes, `ⱥ` three): the limit
        // holds for what is stored, so that the stored form parses again
        // (an export imports).
        let lower = text.to_lowercase();
        if lower.len() > MAX_LEN {
            return Err(InvalidAddress::of(
                input,
                " (longer than 320 bytes in lower case)",
            ));
        }
        Ok(EmailAddress(lower))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_brackets_space_and_case_are_normalized_away() {
        for input in [
            "jane@example.com",
            "  Jane@Example.COM ",
            "<jane@example.com>",
            "\"Jane Doe\" <Jane@Example.com>",
            "Jane Doe <jane@EXAMPLE.com>",
        ] {
            assert_eq!(
                EmailAddress::parse(input).unwrap().as_str(),
                "jane@example.com",
                "{input}"
            );
        }
        assert_eq!(
            EmailAddress::parse("ÄRGER@Bücher.DE").unwrap().as_str(),
            "ärger@bücher.de"
        );
    }

    #[test]
    fn non_addresses_are_refused() {
        for input in [
            "",
            "jane",
            "@example.com",
            "jane@",
            "ja ne@example.com",
            "a@b@c",
            "<>",
            "> jane@x.com <",
        ] {
            assert!(EmailAddress::parse(input).is_err(), "{input}");
        }
    }

    /// Found by fuzzing: 305 bytes that lower-case to 455.
    #[test]
    fn the_limit_holds_for_the_stored_lower_case_form() {
        let input = format!("{}@x.io", "\u{23A}".repeat(150));
        assert_eq!(input.len(), 305);
        let message = EmailAddress::parse(&input).unwrap_err().to_string();
        assert!(
            message.ends_with("(longer than 320 bytes in lower case)"),
            "{message}"
        );
        let fits = format!("{}@x.io", "\u{23A}".repeat(100));
        let stored = EmailAddress::parse(&fits).unwrap();
        assert_eq!(EmailAddress::parse(stored.as_str()).unwrap(), stored);
    }

    #[test]
    fn a_long_input_is_named_cut_and_a_long_address_says_why() {
        let long = format!("{}@example.com", "a".repeat(400));
        let message = EmailAddress::parse(&long).unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "`{}…` is not an email address (longer than 320 bytes)",
                "a".repeat(320)
            )
        );
        let at_limit = format!("{}@example.com", "a".repeat(320 - 12));
        assert!(EmailAddress::parse(&at_limit).is_ok());
        assert_eq!(
            EmailAddress::parse("a b@x").unwrap_err().to_string(),
            "`a b@x` is not an email address"
        );
    }
}
