//! `GET /v1/alerts`: the newest alerts, newest first, each with where it
//! stands on every channel (delivered, or attempts and the last error).

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use crate::app::AppState;
use crate::error::ApiError;

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 500;

#[derive(Deserialize, Debug)]
pub struct AlertsQuery {
    limit: Option<String>,
}

#[tracing::instrument(name = "recent alerts", skip(state))]
pub async fn recent(
    state: web::Data<AppState>,
    query: web::Query<AlertsQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = match query
        .limit
        .as_deref()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| {
                ApiError::InvalidRequest(format!(
                    "limit `{text}` is not a number from 1 to {MAX_LIMIT}"
                ))
            })?,
    };
    let items = state.store.recent_alerts(limit).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items })))
}
