//! `/metrics`: Prometheus text.

use actix_web::{HttpResponse, web};

use crate::app::AppState;

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
