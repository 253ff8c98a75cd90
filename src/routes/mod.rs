//! HTTP endpoints, one file each; handlers are short and delegate.

pub mod alerts;
pub mod api;
pub mod health;
pub mod metrics;
pub mod page;
pub mod rates;
pub mod sns;

/// Any other path or method: a JSON 404 like every other refusal, naming
/// what was asked (a tool reading `error` needs no special case).
pub async fn no_such_path(
    req: actix_web::HttpRequest,
) -> Result<actix_web::HttpResponse, crate::error::ApiError> {
    Err(crate::error::ApiError::NoSuchPath(format!(
        "{} {}",
        req.method(),
        req.path()
    )))
}
