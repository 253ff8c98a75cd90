//! The SES account-level suppression list read back: `bouncer ses import`
//! pages through `ListSuppressedDestinations` into bouncer's list (source
//! `ses-account`; a row bouncer has is never changed), and `bouncer ses
//! diff` shows what only one of the two lists holds.

use std::collections::HashMap;

use super::client::{ListFilter, Listed, SesClient};
use crate::address::EmailAddress;
use crate::store::Store;
use crate::store::ses::ListedAtSes;
use crate::store::suppressions::ListFilter as RowFilter;

/// SES's largest page.
const PAGE: i32 = 1000;

/// bouncer's reason for SES's.
pub fn reason_from_ses(reason: &str) -> Option<&'static str> {
    match reason {
        "BOUNCE" => Some("bounce"),
        "COMPLAINT" => Some("complaint"),
        _ => None,
    }
}

#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    pub pages: usize,
    pub listed: usize,
    /// New rows in bouncer's list.
    pub added: u64,
    /// Addresses bouncer had already (left as they were).
    pub kept: u64,
    /// Entries bouncer cannot take (not an address it accepts, unknown
    /// reason), with why.
    pub skipped: Vec<String>,
}

/// Hands every page of the SES list that `filter` selects to `take`;
/// returns how many pages there were.
async fn each_page(
    client: &SesClient,
    filter: &ListFilter,
    mut take: impl AsyncFnMut(Vec<Listed>) -> anyhow::Result<()>,
) -> anyhow::Result<usize> {
    let mut token = None;
    let mut pages = 0;
    loop {
        let (page, next) = client.list_suppressed(filter, PAGE, token).await?;
        pages += 1;
        take(page).await?;
        match next {
            Some(next) if !next.is_empty() => token = Some(next),
            _ => return Ok(pages),
        }
    }
}

pub async fn import(
    store: &Store,
    client: &SesClient,
    filter: &ListFilter,
) -> anyhow::Result<ImportReport> {
    let mut report = ImportReport::default();
    let pages = each_page(client, filter, async |page: Vec<Listed>| {
        report.listed += page.len();
        let mut rows = Vec::with_capacity(page.len());
        for listed in page {
            let email = match EmailAddress::parse(&listed.email) {
                Ok(email) => email,
                Err(e) => {
                    report.skipped.push(format!("{}: {e}", listed.email));
                    continue;
                }
            };
            let Some(reason) = reason_from_ses(&listed.reason) else {
                report.skipped.push(format!(
                    "{}: unknown reason {}",
                    listed.email, listed.reason
                ));
                continue;
            };
            rows.push(ListedAtSes {
                email,
                reason,
                ses_reason: listed.reason,
                last_update: listed.last_update,
            });
        }
        let added = store.import_from_ses(&rows).await?;
        report.added += added;
        report.kept += rows.len() as u64 - added;
        Ok(())
    })
    .await;
    // Each page is stored as it comes: say what a failure midway left.
    report.pages = match pages {
        Ok(pages) => pages,
        Err(e) if report.listed > 0 => anyhow::bail!(
            "{e:#}; before it, {} addresses were listed: {} added, {} in bouncer already. \
             Run it again to finish: what bouncer has stays as it is",
            report.listed,
            report.added,
            report.kept
        ),
        Err(e) => return Err(e),
    };
    Ok(report)
}

/// What differs between the two lists.
#[derive(Debug, Clone, Default)]
pub struct Diff {
    /// (address, bouncer's reason)
    pub only_in_bouncer: Vec<(String, String)>,
    /// (address, SES's reason)
    pub only_at_ses: Vec<(String, String)>,
    /// (address, bouncer's reason, SES's reason) for bounces listed as
    /// complaints and the other way round.
    pub reason_differs: Vec<(String, String, String)>,
    pub in_both: usize,
}

/// Reads the whole SES list into memory, then walks bouncer's list once.
pub async fn diff(store: &Store, client: &SesClient) -> anyhow::Result<Diff> {
    let mut at_ses: HashMap<String, String> = HashMap::new();
    each_page(client, &ListFilter::default(), async |page: Vec<Listed>| {
        for listed in page {
            // Compared as bouncer normalizes; kept as SES wrote it otherwise.
            let key = EmailAddress::parse(&listed.email)
                .map(|e| e.as_str().to_owned())
                .unwrap_or(listed.email);
            at_ses.insert(key, listed.reason);
        }
        Ok(())
    })
    .await?;
    let mut diff = Diff::default();
    let mut filter = RowFilter {
        limit: 1000,
        ..RowFilter::default()
    };
    loop {
        let page = store.list(&filter).await?;
        for row in &page {
            match at_ses.remove(&row.email) {
                None => diff
                    .only_in_bouncer
                    .push((row.email.clone(), row.reason.clone())),
                Some(ses_reason) => {
                    diff.in_both += 1;
                    let expected = reason_from_ses(&ses_reason);
                    if row.reason != "manual" && expected != Some(row.reason.as_str()) {
                        diff.reason_differs.push((
                            row.email.clone(),
                            row.reason.clone(),
                            ses_reason,
                        ));
                    }
                }
            }
        }
        match page.last() {
            Some(last) if page.len() == 1000 => filter.after = Some(last.email.clone()),
            _ => break,
        }
    }
    let mut only_at_ses: Vec<(String, String)> = at_ses.into_iter().collect();
    only_at_ses.sort();
    diff.only_at_ses = only_at_ses;
    Ok(diff)
}
