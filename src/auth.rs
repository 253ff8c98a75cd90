//! Who may use the admin listener (`/v1`, `/metrics`): one middleware wraps
//! all of it, so no handler can forget it. With `API_TOKENS` set, every
//! request needs `Authorization: Bearer <token>` matching one of them
//! (the scheme in any case, RFC 7235; tokens compared in constant time, over
//! SHA-256 digests so that lengths leak nothing), from loopback or not. With
//! no token configured, the admin listener is on loopback (start-up refuses
//! otherwise) and serves whoever can connect to it. No request header
//! decides who is local: the listener's address does.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{AUTHORIZATION, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, web};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// The configured tokens, as digests with the name of their holder.
pub struct ApiTokens {
    tokens: Vec<(String, [u8; 32])>,
}

fn digest(text: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl ApiTokens {
    /// `name:token` pairs; a bare token is named `api`.
    pub fn parse(entries: &[String]) -> ApiTokens {
        let tokens = entries
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
            .map(|e| match e.split_once(':') {
                Some((name, token)) => (name.to_owned(), digest(token)),
                None => ("api".to_owned(), digest(e)),
            })
            .collect();
        ApiTokens { tokens }
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The holder of `token`. Every token is compared, match or not.
    fn holder(&self, token: &str) -> Option<&str> {
        let presented = digest(token);
        let mut found = None;
        for (name, expected) in &self.tokens {
            if bool::from(presented.ct_eq(expected)) {
                found = Some(name.as_str());
            }
        }
        found
    }

    /// Who sends a request with this `Authorization` header.
    fn caller(&self, authorization: Option<&HeaderValue>) -> Result<Caller, ApiError> {
        if self.is_empty() {
            return Ok(Caller {
                name: "loopback".into(),
            });
        }
        authorization
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .and_then(|token| self.holder(token))
            .map(|name| Caller {
                name: name.to_owned(),
            })
            .ok_or(ApiError::Unauthorized)
    }
}

/// The token of `Bearer <token>`; the scheme is case-insensitive (RFC 7235).
fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once([' ', '\t'])?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The authenticated caller of an admin request, in the request's
/// extensions for the handlers that record who made a change
/// (`web::ReqData<Caller>`).
#[derive(Clone, Debug)]
pub struct Caller {
    pub name: String,
}

/// The authentication layer of the admin listener (`middleware::from_fn`).
pub async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let caller = match req.app_data::<web::Data<ApiTokens>>() {
        Some(tokens) => tokens.caller(req.headers().get(AUTHORIZATION)),
        None => {
            tracing::error!("API tokens are not configured in the admin app");
            Err(ApiError::Internal)
        }
    };
    match caller {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            Ok(next.call(req).await?.map_into_left_body())
        }
        Err(refused) => Ok(req.error_response(refused).map_into_right_body()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for header in [
            "Bearer t0k",
            "bearer t0k",
            "BEARER t0k",
            "bEaReR t0k",
            "Bearer   t0k ",
            "Bearer\tt0k",
        ] {
            assert_eq!(bearer_token(header), Some("t0k"), "{header:?}");
        }
        for header in ["Basic t0k", "Bearert0k", "Bearer", "Bearer   ", "t0k", ""] {
            assert_eq!(bearer_token(header), None, "{header:?}");
        }
    }

    #[test]
    fn every_token_names_its_holder() {
        let tokens = ApiTokens::parse(&["backend:one".into(), "two".into(), " ".into()]);
        let caller = |h: &'static str| {
            tokens
                .caller(Some(&HeaderValue::from_static(h)))
                .map(|c| c.name)
        };
        assert_eq!(caller("Bearer one").ok().as_deref(), Some("backend"));
        assert_eq!(caller("bearer two").ok().as_deref(), Some("api"));
        assert!(caller("Bearer three").is_err());
        assert!(tokens.caller(None).is_err());
        let open = ApiTokens::parse(&[]);
        assert_eq!(
            open.caller(None).map(|c| c.name).ok().as_deref(),
            Some("loopback")
        );
    }
}
