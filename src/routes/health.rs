//! `/healthz` (the process answers) and `/readyz` (the database answers and
//! takes the writer's writes). While the writer spools, `/readyz` says so
//! with 503, but `POST /sns` keeps accepting messages into the spool: a load
//! balancer in front of SNS should check `/healthz`, not `/readyz`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};

use crate::app::AppState;
use crate::error::error_body;
use crate::ingest::applier::Room;
use crate::routes::DATABASE_ANSWER_BUDGET;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "alive" }))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if !state.writer.database_up() {
        let why = if state.writer.writes_directly() && !state.writer.spool_failing() {
            "no message has been stored since the database last failed to take one (or since a start on a full disk); messages go to the database".to_owned()
        } else if state.writer.spool_failing() {
            "the database does not take writes, and the spool could not take the last messages either (a full disk?): they were answered 503 so that SNS retries them; the server's log has the details".to_owned()
        } else {
            format!(
                "the database does not take writes; messages are kept in the spool ({} bytes waiting) and applied when it is back",
                state.writer.spooled_bytes()
            )
        };
        // The room, whenever the disk is short of it; what room would
        // change only when the last write failed for it. `statvfs` off the
        // worker: a hung network file system must not hold it.
        let store = state.store.clone();
        let room = web::block(move || Room::of(&store))
            .await
            .unwrap_or(Room::Unknown);
        let detail = match room {
            Room::Short(free) => match state.writer.room_needed() {
                Some(needed) => format!(
                    "the database's disk has {free} bytes free: ready again once a message is stored or it has {} MiB free; {why}",
                    needed >> 20
                ),
                None => format!("the database's disk has {free} bytes free; {why}"),
            },
            Room::Enough | Room::Unknown => why,
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
