//! `/healthz` (the process answers) and `/readyz` (the database answers and
//! takes the writer's writes). While the writer spools, `/readyz` says so
//! with 503, but `POST /sns` keeps accepting messages into the spool: a load
//! balancer in front of SNS should check `/healthz`, not `/readyz`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};

use crate::app::AppState;
use crate::error::error_body;
use crate::routes::DATABASE_ANSWER_BUDGET;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "alive" }))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if !state.writer.database_up() {
        let detail = if state.writer.spool_failing() {
            "the database does not take writes, and the spool could not take the last messages either (a full disk?): they were answered 503 so that SNS retries them; the server's log has the details".to_owned()
        } else {
            format!(
                "the database does not take writes; messages are kept in the spool ({} bytes waiting) and applied when it is back",
                state.writer.spooled_bytes()
            )
        };
        return error_body(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            &detail,
        );
    }
    match tokio::time::timeout(DATABASE_ANSWER_BUDGET, state.store.ping()).await {
        Ok(Ok(())) => HttpResponse::Ok().json(serde_json::json!({ "status": "ready" })),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readyz: the database does not answer");
            error_body(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "the database does not answer; the server's log has the details",
            )
        }
        Err(_) => error_body(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            &format!(
                "the database did not answer within {} seconds",
                DATABASE_ANSWER_BUDGET.as_secs()
            ),
        ),
    }
}
