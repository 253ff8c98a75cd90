//! `EmailAddress`: a recipient address in the one normalized form bouncer
//! stores and looks up. Normalizing: take what is inside the last `<...>` if
//! there is one (dropping a display name such as `"Jane" <jane@x.com>`),
//! trim white space, lower-case (Unicode). The result must have a non-empty
//! local part and domain around a single `@` (exactly one), and no white space.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct EmailAddress(String);

#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not an email address")]
pub struct InvalidAddress(pub String);

impl EmailAddress {
    pub fn parse(input: &str) -> Result<Self, InvalidAddress> {
        let invalid = || InvalidAddress(input.chars().take(320).collect());
        let mut text = input.trim();
        if let (Some(open), Some(close)) = (text.rfind('<'), text.rfind('>')) {
            if open < close {
                text = text[open + 1..close].trim();
            } else {
                return Err(invalid());
            }
        }
        let text = text.trim_matches(|c: char| c.is_whitespace());
        if text.len() > 320
            || text
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
        Ok(EmailAddress(text.to_lowercase()))
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
}
