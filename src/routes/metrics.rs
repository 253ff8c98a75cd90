//! `/metrics`: Prometheus text.

use actix_web::{HttpResponse, web};

use crate::app::AppState;

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let mut text = state.metrics.render();
    // Read from the database at scrape time, so every replica reports the
    // shared truth; the rate read costs the same whatever the history.
    let trimmed = text.trim_end().trim_end_matches("# EOF").to_owned();
    text = trimmed;
    match (
        crate::guard::current_rates(&state.store, &state.guard).await,
        state.store.sending_state().await,
    ) {
        (Ok(rates), Ok(sending)) => {
            let paused = i32::from(sending.state == "paused");
            text.push_str(&format!(
                "# HELP bouncer_bounce_rate Hard bounce rate over the current window.\n# TYPE bouncer_bounce_rate gauge\nbouncer_bounce_rate {}\n\
                 # HELP bouncer_complaint_rate Complaint rate over the current window.\n# TYPE bouncer_complaint_rate gauge\nbouncer_complaint_rate {}\n\
                 # HELP bouncer_window_sends Sends in the current window.\n# TYPE bouncer_window_sends gauge\nbouncer_window_sends {}\n\
                 # HELP bouncer_sending_paused 1 while sending is paused.\n# TYPE bouncer_sending_paused gauge\nbouncer_sending_paused {}\n",
                rates.bounce_rate, rates.complaint_rate, rates.sends, paused
            ));
        }
        (Err(e), _) | (_, Err(e)) => tracing::warn!(error = %e, "metrics: cannot read the rates"),
    }
    match crate::ses_account::status::metrics_text(&state.store).await {
        Ok(ses) => text.push_str(&ses),
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read the SES state"),
    }
    text.push_str("# EOF\n");
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(text)
}
