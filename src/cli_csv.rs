//! `bouncer suppressions export` and `import`: the list as CSV, every
//! column of the public `suppressions` table, so that an export imported
//! into a fresh database gives the same rows, and imported into the same
//! database changes nothing. Import merges (see `store::suppressions`) and
//! is all or nothing: a bad line imports nothing.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, anyhow, bail};

use crate::address::EmailAddress;
use crate::routes::api::{parse_reason, parse_since};
use crate::store::Store;
use crate::store::suppressions::{ImportRow, ListFilter, Suppression, columns};
use crate::time::Timestamp;

const PAGE: i64 = 1000;

/// The row's fields in `columns()` order; times in the fixed UTC layout.
fn record(r: &Suppression) -> [String; 13] {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    [
        r.email.clone(),
        r.reason.clone(),
        opt(&r.bounce_type),
        opt(&r.bounce_subtype),
        opt(&r.complaint_feedback_type),
        opt(&r.diagnostic_code),
        r.first_seen_at.to_text(),
        r.last_seen_at.to_text(),
        r.event_count.to_string(),
        opt(&r.last_ses_message_id),
        opt(&r.last_sns_message_id),
        r.source.clone(),
        opt(&r.note),
    ]
}

/// Writes the whole list to `sink`; returns how many rows.
pub async fn export(store: &Store, sink: Box<dyn Write>) -> anyhow::Result<usize> {
    let mut csv = csv::Writer::from_writer(sink);
    let mut filter = ListFilter {
        limit: PAGE,
        ..ListFilter::default()
    };
    let mut count = 0usize;
    loop {
        let page = store.list(&filter).await?;
        // The header once the first page is read: an export that cannot
        // read the list writes nothing, not a header that looks like an
        // empty list (`export > list.csv` in a script).
        if count == 0 {
            csv.write_record(columns())?;
        }
        for row in &page {
            csv.write_record(record(row))?;
        }
        count += page.len();
        match page.last() {
            Some(last) if page.len() as i64 == PAGE => filter.after = Some(last.email.clone()),
            _ => break,
        }
    }
    csv.flush()?;
    Ok(count)
}

/// Reads every line of `file` into rows, or says which line is wrong.
/// Columns the table does not have are ignored, and named on stderr.
pub fn read_import(file: &Path) -> anyhow::Result<Vec<ImportRow>> {
    let mut reader =
        csv::Reader::from_path(file).with_context(|| format!("cannot read {}", file.display()))?;
    let headers = reader
        .headers()
        .with_context(|| format!("{}: no CSV header", file.display()))?
        .clone();
    let known = columns();
    let mut at: HashMap<&'static str, usize> = HashMap::new();
    let mut ignored = Vec::new();
    for (i, header) in headers.iter().enumerate() {
        let name = header.trim().to_ascii_lowercase();
        match known.iter().find(|k| **k == name) {
            Some(column) => {
                at.insert(column, i);
            }
            None => ignored.push(header.to_owned()),
        }
    }
    if !at.contains_key("email") {
        bail!(
            "{}: the CSV header has no `email` column (it may have: {}); nothing imported",
            file.display(),
            known.join(", ")
        );
    }
    if !ignored.is_empty() {
        eprintln!(
            "note: columns not in the suppressions table are ignored: {}",
            ignored.join(", ")
        );
    }
    let default_source = format!("import:{}", file.display());
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        // Line 1 is the header.
        let line = i + 2;
        let record = record.map_err(|e| anyhow!("line {line}: {e}; nothing imported"))?;
        // Kept as written (a diagnostic code round-trips byte for byte);
        // an empty field is an empty column.
        let field = |name: &str| {
            at.get(name)
                .and_then(|c| record.get(*c))
                .filter(|v| !v.trim().is_empty())
                .map(str::to_owned)
        };
        let row = parse_row(&field, &default_source)
            .map_err(|why| anyhow!("line {line}: {why}; nothing imported"))?;
        rows.push(row);
    }
    Ok(rows)
}

fn parse_row(
    field: &dyn Fn(&str) -> Option<String>,
    default_source: &str,
) -> Result<ImportRow, String> {
    let email = field("email").ok_or("no email")?;
    let email = EmailAddress::parse(email.trim()).map_err(|e| e.to_string())?;
    let reason = match field("reason") {
        Some(r) => parse_reason(r.trim()).map_err(|e| e.to_string())?,
        None => "manual".to_owned(),
    };
    let time = |name: &str| -> Result<Option<Timestamp>, String> {
        field(name)
            .map(|t| {
                parse_since(t.trim()).map_err(|_| format!("{name} `{t}` is not an ISO 8601 time"))
            })
            .transpose()
    };
    let (first_seen_at, last_seen_at) = (time("first_seen_at")?, time("last_seen_at")?);
    if let (Some(first), Some(last)) = (first_seen_at, last_seen_at)
        && first > last
    {
        return Err(format!(
            "first_seen_at {first} is after last_seen_at {last}"
        ));
    }
    let event_count = field("event_count")
        .map(|n| {
            n.trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or(format!(
                    "event_count `{n}` is not a whole number of at least 1"
                ))
        })
        .transpose()?;
    Ok(ImportRow {
        email,
        reason,
        bounce_type: field("bounce_type"),
        bounce_subtype: field("bounce_subtype"),
        complaint_feedback_type: field("complaint_feedback_type"),
        diagnostic_code: field("diagnostic_code"),
        first_seen_at,
        last_seen_at,
        event_count,
        last_ses_message_id: field("last_ses_message_id"),
        last_sns_message_id: field("last_sns_message_id"),
        source: field("source").unwrap_or_else(|| default_source.to_owned()),
        note: field("note"),
    })
}
