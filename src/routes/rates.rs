//! `GET /v1/rates/history`: both rates hour by hour over the guard's
//! maximum age, with the windows behind them and the lines they are judged
//! against (see `guard::history`), for the page and for anyone's own tools.

use actix_web::{HttpResponse, web};

use crate::app::AppState;
use crate::error::ApiError;

#[tracing::instrument(name = "rates history", skip(state))]
pub async fn history(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let now = state.verifier.clock().now();
    let history = crate::guard::history::read(&state.store, &state.guard, now).await?;
    Ok(HttpResponse::Ok().json(history))
}
