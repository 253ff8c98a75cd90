//! HTTP endpoints, one file each; handlers are short and delegate.

pub mod alerts;
pub mod api;
pub mod health;
pub mod inflate;
pub mod metrics;
pub mod page;
pub mod rates;
pub mod sns;

/// The longest a probe or a scrape waits for the database: an unreachable
/// database must not make `/readyz` or `/metrics` outlast the prober's own
/// time-out (Prometheus gives a scrape 10 s by default), since those are
/// what report the outage.
pub const DATABASE_ANSWER_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);

/// A route for reading: GET, and HEAD, which answers the same headers
/// without the body (a load balancer's or a monitor's check often uses it;
/// actix leaves the body out of a HEAD answer itself).
pub fn read() -> actix_web::Route {
    use actix_web::guard;
    actix_web::web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

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
