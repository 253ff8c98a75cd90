//! `/metrics`: Prometheus text.

use actix_web::{HttpResponse, web};

use crate::app::AppState;
use crate::routes::DATABASE_ANSWER_BUDGET;

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    // Read from the database at scrape time, so every replica reports the
    // shared truth; the rate read costs the same whatever the history.
    // Both reads run at once under one budget: during an outage each would
    // otherwise wait out the pool's acquire time-out in turn (three of them
    // took 9 s), and the scrape that should report `bouncer_database_up 0`
    // would itself time out. What the budget cuts off is left out of this
    // scrape, as Prometheus expects of a series it cannot read.
    let (guard, ses) = futures_util::future::join(
        tokio::time::timeout(DATABASE_ANSWER_BUDGET, guard_text(&state)),
        tokio::time::timeout(
            DATABASE_ANSWER_BUDGET,
            crate::ses_account::status::metrics_text(&state.store),
        ),
    )
    .await;
    // The writer learns of an outage only when it writes: on a quiet feed
    // it would still say up while the reads here time out. The gauge says
    // both, read now.
    let read = matches!(guard, Ok(Ok(_))) && matches!(ses, Ok(Ok(_)));
    state
        .metrics
        .database_up(state.writer.database_up() && read);
    // A reader that holds a transaction open keeps checkpoints from
    // reaching the end of the log, which then grows with every write
    // (SQLite says nothing). A log not there yet is empty; one that cannot
    // be read is left out of this scrape.
    if let Some(wal) = state.store.writer_wal() {
        match std::fs::metadata(wal) {
            Ok(m) => state.metrics.sqlite_wal(wal, m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => state.metrics.sqlite_wal(wal, 0),
            Err(e) => {
                state.metrics.no_sqlite_wal();
                tracing::warn!(error = %e, "metrics: cannot read the size of {}", wal.display())
            }
        }
    }
    let mut text = state.metrics.render();
    let trimmed = text.trim_end().trim_end_matches("# EOF").to_owned();
    text = trimmed;
    append(&mut text, guard, "the rates");
    append(&mut text, ses, "the SES state");
    text.push_str("# EOF\n");
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(text)
}

/// Adds what a read returned in time, or says in the log what is left out.
fn append(
    text: &mut String,
    read: Result<crate::store::DbResult<String>, tokio::time::error::Elapsed>,
    what: &str,
) {
    match read {
        Ok(Ok(part)) => text.push_str(&part),
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics: cannot read {what}"),
        Err(_) => tracing::warn!(
            budget_ms = DATABASE_ANSWER_BUDGET.as_millis() as u64,
            "metrics: the database did not answer in time; left out of this scrape: {what}"
        ),
    }
}

/// The guard's gauges: the rates over the current window and the pause.
async fn guard_text(state: &AppState) -> crate::store::DbResult<String> {
    let (sending, rates) = crate::guard::current_rates(&state.store, &state.guard).await?;
    let paused = i32::from(sending.state == "paused");
    Ok(format!(
        "# HELP bouncer_bounce_rate Hard bounce rate over the current window.\n# TYPE bouncer_bounce_rate gauge\nbouncer_bounce_rate {}\n\
         # HELP bouncer_complaint_rate Complaint rate over the current window.\n# TYPE bouncer_complaint_rate gauge\nbouncer_complaint_rate {}\n\
         # HELP bouncer_window_sends Sends in the current window.\n# TYPE bouncer_window_sends gauge\nbouncer_window_sends {}\n\
         # HELP bouncer_sending_paused 1 while sending is paused.\n# TYPE bouncer_sending_paused gauge\nbouncer_sending_paused {}\n",
        rates.bounce_rate, rates.complaint_rate, rates.sends, paused
    ))
}
