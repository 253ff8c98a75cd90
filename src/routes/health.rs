//! `/healthz` (the process answers) and `/readyz` (the database answers).

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};

use crate::app::AppState;
use crate::error::error_body;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "alive" }))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => HttpResponse::Ok().json(serde_json::json!({ "status": "ready" })),
        Ok(Err(e)) => error_body(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            &format!("the database does not answer: {e}"),
        ),
        Err(_) => error_body(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database did not answer within 2 seconds",
        ),
    }
}
