//! `Timestamp`: the one time type that goes into the database.
//!
//! PostgreSQL stores it as `timestamptz`; SQLite as fixed-width UTC text
//! (`2026-11-25T10:00:00.000Z`), so that an operator can read it in `sqlite3`
//! and so that text order is time order (the variable-width RFC 3339 that
//! sqlx writes for `OffsetDateTime` on SQLite does not sort correctly).

use std::fmt;

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef, Postgres};
use sqlx::sqlite::{Sqlite, SqliteArgumentsBuffer, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Type};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Duration, OffsetDateTime, UtcOffset};

/// A UTC instant with millisecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

const SQLITE_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// The earliest and latest instants a `Timestamp` holds: the UTC years
/// whose text has four digits, so that the text form is fixed width.
const FIRST: Timestamp = Timestamp(time::macros::datetime!(0000-01-01 00:00:00 UTC));
const LAST: Timestamp = Timestamp(time::macros::datetime!(9999-12-31 23:59:59.999 UTC));

impl Timestamp {
    /// The latest instant a `Timestamp` holds: an open end of a range.
    pub const LAST: Timestamp = LAST;

    /// Truncates to whole milliseconds, the precision both databases keep;
    /// an instant outside the years 0000 to 9999 (UTC) is taken as the
    /// nearest end of that range.
    pub fn from_datetime(at: OffsetDateTime) -> Self {
        Self::checked(at).unwrap_or(if at.year() > 5000 { LAST } else { FIRST })
    }

    /// The instant, truncated to milliseconds, if its UTC year is within
    /// 0000 to 9999. (Moving a time such as `9999-12-31T23:59:59-01:00` to
    /// UTC leaves the range `time` can hold; that must be an answer, not a
    /// panic: SNS's `Timestamp` is read before the signature is checked.)
    fn checked(at: OffsetDateTime) -> Option<Self> {
        let at = at.checked_to_offset(UtcOffset::UTC)?;
        let millis = at.millisecond();
        let truncated = at
            .replace_nanosecond(u32::from(millis) * 1_000_000)
            .unwrap_or(at);
        Some(Timestamp(truncated)).filter(|t| (FIRST..=LAST).contains(t))
    }

    /// Parses an ISO 8601 / RFC 3339 time such as SNS's `Timestamp`; none
    /// outside the years 0000 to 9999 in UTC.
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        OffsetDateTime::parse(text, &Rfc3339)
            .ok()
            .and_then(Self::checked)
    }

    pub fn from_unix_millis(millis: i64) -> Option<Self> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
            .ok()
            .and_then(Self::checked)
    }

    pub fn unix_millis(self) -> i64 {
        (self.0.unix_timestamp_nanos() / 1_000_000) as i64
    }

    /// `self - by`, or the end of the range it passes.
    pub fn saturating_sub(self, by: Duration) -> Self {
        let edge = if by.is_negative() { LAST } else { FIRST };
        self.0.checked_sub(by).map_or(edge, Self::from_datetime)
    }

    /// `self + by`, or the end of the range it passes.
    pub fn saturating_add(self, by: Duration) -> Self {
        let edge = if by.is_negative() { FIRST } else { LAST };
        self.0.checked_add(by).map_or(edge, Self::from_datetime)
    }

    /// The same instant as text, in the fixed SQLite layout (also used in
    /// JSON answers and CSV exports).
    pub fn to_text(self) -> String {
        self.0
            .format(SQLITE_FORMAT)
            .unwrap_or_else(|_| self.0.unix_timestamp().to_string())
    }

    fn parse_text(text: &str) -> Option<Self> {
        time::PrimitiveDateTime::parse(text, SQLITE_FORMAT)
            .ok()
            .and_then(|t| Self::checked(t.assume_utc()))
            .or_else(|| Self::parse_rfc3339(text))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_text())
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse_text(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("not a timestamp: {text}")))
    }
}

impl Type<Sqlite> for Timestamp {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for Timestamp {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Sqlite>::encode(self.to_text(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Timestamp {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<Sqlite>>::decode(value)?;
        Timestamp::parse_text(text).ok_or_else(|| format!("not a timestamp: {text}").into())
    }
}

impl Type<Postgres> for Timestamp {
    fn type_info() -> PgTypeInfo {
        <OffsetDateTime as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for Timestamp {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Postgres>::encode(self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for Timestamp {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        <OffsetDateTime as Decode<Postgres>>::decode(value).map(Timestamp::from_datetime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_is_fixed_width_and_sorts_like_time() {
        let a = Timestamp::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        let b = Timestamp::parse_rfc3339("2026-01-01T00:00:00.5Z").unwrap();
        assert_eq!(a.to_text(), "2026-01-01T00:00:00.000Z");
        assert_eq!(b.to_text(), "2026-01-01T00:00:00.500Z");
        assert!(a.to_text() < b.to_text());
        assert_eq!(Timestamp::parse_text(&b.to_text()), Some(b));
    }

    /// Found by fuzzing: moving these to UTC leaves the range `time` holds
    /// (it panicked) or gives a year of five characters (whose text did not
    /// parse back).
    #[test]
    fn times_outside_four_digit_years_are_refused_not_a_panic() {
        for text in ["9999-12-31T23:59:59-01:00", "0000-01-01T00:00:00+01:00"] {
            assert_eq!(Timestamp::parse_rfc3339(text), None, "{text}");
        }
        let last = Timestamp::parse_rfc3339("9999-12-31T23:59:59.999Z").unwrap();
        let first = Timestamp::parse_rfc3339("0000-01-01T00:00:00Z").unwrap();
        for t in [last, first] {
            assert_eq!(t.to_text().len(), 24);
            assert_eq!(Timestamp::parse_text(&t.to_text()), Some(t));
        }
        assert_eq!(last.saturating_add(Duration::days(2)), last);
        assert_eq!(first.saturating_sub(Duration::days(2)), first);
        assert_eq!(last.saturating_sub(Duration::MIN), last);
        assert_eq!(first.saturating_add(Duration::MIN), first);
        assert_eq!(Timestamp::from_unix_millis(-62_167_219_200_001), None);
    }
}
