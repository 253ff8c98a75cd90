//! Who may call the `/v1` API. With `API_TOKENS` set, a request must carry
//! `Authorization: Bearer <token>` matching one of them (compared in
//! constant time, over SHA-256 digests so that lengths leak nothing). With no
//! token configured, only direct loopback clients are served: a request that
//! came through a proxy (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`, `Via`) is refused even from
//! 127.0.0.1, because the proxy would otherwise open the API to everyone.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
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
}

/// Headers that reverse proxies add: a request carrying one came from
/// elsewhere, whatever its peer address says.
const PROXY_HEADERS: [&str; 6] = [
    "forwarded",
    "x-forwarded-for",
    "x-real-ip",
    "x-forwarded-host",
    "x-forwarded-proto",
    "via",
];

/// The authenticated caller of an API request.
pub struct Caller {
    pub name: String,
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

fn authenticate(req: &HttpRequest) -> Result<Caller, ApiError> {
    let tokens = req
        .app_data::<web::Data<ApiTokens>>()
        .ok_or(ApiError::Internal)?;
    if tokens.is_empty() {
        let loopback = req.peer_addr().is_some_and(|a| a.ip().is_loopback());
        let proxied = PROXY_HEADERS.iter().any(|h| req.headers().contains_key(*h));
        return if loopback && !proxied {
            Ok(Caller {
                name: "loopback".into(),
            })
        } else {
            Err(ApiError::LoopbackOnly)
        };
    }
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or(ApiError::Unauthorized)?;
    tokens
        .holder(token)
        .map(|name| Caller {
            name: name.to_owned(),
        })
        .ok_or(ApiError::Unauthorized)
}
