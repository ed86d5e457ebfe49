//! Who may look and who may act: basic auth, bearer tokens and login sessions, checked on every
//! request but the login page and the static assets; the CSRF token every control needs; and
//! `--read-only`.
//!
//! A browser that logged in holds an HttpOnly, SameSite=Strict session cookie. Since a browser
//! sends a cookie (and cached basic credentials) to this origin on its own, even from another
//! site's form, every `POST /api/...` must carry `X-Celerity-Csrf` with the token of
//! `GET /api/session` (which another site cannot read), and its `Origin`, when sent, must be this
//! host. A bearer token is never sent on its own by a browser, so requests made with one are
//! exempt.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{HttpMessage as _, HttpResponse, web};
use base64::Engine as _;
use subtle::ConstantTimeEq as _;

use crate::error::ApiError;

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "celerity_session";
/// The header that carries the CSRF token.
pub(crate) const CSRF_HEADER: &str = "X-Celerity-Csrf";
/// How long a login lasts.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most (the oldest are dropped first).
const MAX_SESSIONS: usize = 10_000;

/// The credentials the dashboard accepts. Its `Debug` shows user names and counts, never a
/// secret.
#[derive(Clone, Default)]
pub struct Credentials {
    users: Vec<(String, String)>,
    tokens: Vec<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let users: Vec<&str> = self.users.iter().map(|(user, _)| user.as_str()).collect();
        f.debug_struct("Credentials")
            .field("users", &users)
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

/// A `user:password` that does not read as one.
#[derive(Debug, thiserror::Error)]
#[error("a basic-auth credential is `user:password` with a user name and a password")]
pub struct InvalidCredential;

impl Credentials {
    /// Adds a `user:password` pair.
    ///
    /// # Errors
    /// [`InvalidCredential`] when there is no `:`, or the user or password is empty.
    pub fn add_user(&mut self, pair: &str) -> Result<(), InvalidCredential> {
        match pair.split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => {
                self.users.push((user.to_owned(), password.to_owned()));
                Ok(())
            }
            _ => Err(InvalidCredential),
        }
    }

    /// Adds a bearer token.
    ///
    /// # Errors
    /// [`InvalidCredential`] for an empty token.
    pub fn add_token(&mut self, token: &str) -> Result<(), InvalidCredential> {
        if token.is_empty() {
            return Err(InvalidCredential);
        }
        self.tokens.push(token.to_owned());
        Ok(())
    }

    /// Whether any credential is set: then every request must present one.
    pub fn is_enabled(&self) -> bool {
        !self.users.is_empty() || !self.tokens.is_empty()
    }

    /// The user a `user`/`password` pair logs in as.
    fn user(&self, user: &str, password: &str) -> Option<String> {
        self.users
            .iter()
            .find(|(known, secret)| {
                bool::from(known.as_bytes().ct_eq(user.as_bytes()))
                    & bool::from(secret.as_bytes().ct_eq(password.as_bytes()))
            })
            .map(|(known, _)| known.clone())
    }

    fn token(&self, token: &str) -> bool {
        self.tokens
            .iter()
            .any(|known| bool::from(known.as_bytes().ct_eq(token.as_bytes())))
    }
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Caller {
    /// Auth is off.
    Anyone,
    /// A user, by basic auth or a login session.
    User(String),
    /// A bearer token holder.
    Token,
}

impl Caller {
    pub(crate) fn name(&self) -> Option<&str> {
        match self {
            Caller::Anyone => None,
            Caller::User(user) => Some(user),
            Caller::Token => Some("token"),
        }
    }
}

struct Session {
    user: String,
    expires: Instant,
}

/// The gate every request passes.
pub(crate) struct Gate {
    credentials: Credentials,
    sessions: Mutex<HashMap<String, Session>>,
    csrf: String,
    pub(crate) read_only: bool,
}

/// 32 random bytes as hex.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    if getrandom::fill(&mut bytes).is_err() {
        // No system randomness is unrecoverable for a server that hands out sessions.
        panic!("the operating system gives no random bytes");
    }
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

impl Gate {
    pub(crate) fn new(credentials: Credentials, read_only: bool) -> Self {
        Self {
            credentials,
            sessions: Mutex::new(HashMap::new()),
            csrf: random_token(),
            read_only,
        }
    }

    pub(crate) fn auth_enabled(&self) -> bool {
        self.credentials.is_enabled()
    }

    pub(crate) fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Who `request` comes from, or `None` when it brings no valid credential.
    fn caller(&self, request: &ServiceRequest) -> Option<Caller> {
        if !self.credentials.is_enabled() {
            return Some(Caller::Anyone);
        }
        if let Some(value) = request.headers().get(header::AUTHORIZATION)
            && let Ok(value) = value.to_str()
        {
            return self.authorization(value);
        }
        let cookie = request.cookie(SESSION_COOKIE)?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        match sessions.get(cookie.value()) {
            Some(session) if session.expires > Instant::now() => {
                Some(Caller::User(session.user.clone()))
            }
            Some(_) => {
                sessions.remove(cookie.value());
                None
            }
            None => None,
        }
    }

    fn authorization(&self, value: &str) -> Option<Caller> {
        let (scheme, rest) = value.split_once(' ')?;
        if scheme.eq_ignore_ascii_case("bearer") {
            return self.credentials.token(rest.trim()).then_some(Caller::Token);
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':')?;
        self.credentials.user(user, password).map(Caller::User)
    }

    /// Checks a login form: a session id for the user it names, or `None`.
    pub(crate) fn log_in(&self, user: &str, password: &str, token: &str) -> Option<String> {
        let user = match (user.is_empty(), token.is_empty()) {
            (false, _) => self.credentials.user(user, password)?,
            (true, false) if self.credentials.token(token) => "token".to_owned(),
            _ => return None,
        };
        let id = random_token();
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        sessions.retain(|_, session| session.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, session)| session.expires)
                .map(|(id, _)| id.clone())
        {
            sessions.remove(&oldest);
        }
        let expires = now + SESSION_LIFETIME;
        sessions.insert(id.clone(), Session { user, expires });
        Some(id)
    }

    pub(crate) fn log_out(&self, session: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.remove(session);
    }

    /// Refuses a control request that lacks the CSRF token or comes from another origin.
    fn check_control(&self, request: &ServiceRequest, caller: &Caller) -> Result<(), ApiError> {
        if self.read_only {
            return Err(ApiError::read_only());
        }
        check_origin(request)?;
        if *caller == Caller::Token {
            return Ok(());
        }
        let given = request
            .headers()
            .get(CSRF_HEADER)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| ApiError::csrf("the CSRF token is missing"))?;
        match bool::from(given.as_bytes().ct_eq(self.csrf.as_bytes())) {
            true => Ok(()),
            false => Err(ApiError::csrf("the CSRF token is wrong")),
        }
    }
}

/// Refuses a request whose `Origin` is not this host.
pub(crate) fn check_origin(request: &ServiceRequest) -> Result<(), ApiError> {
    let Some(origin) = request.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let host = request.connection_info().host().to_owned();
    let origin = origin.to_str().unwrap_or_default();
    let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
    match origin_host == host {
        true => Ok(()),
        false => Err(ApiError::csrf(&format!(
            "the request comes from another site ({origin})"
        ))),
    }
}

/// Paths anyone may fetch: the login page and the static assets (they hold no data).
fn is_public(path: &str) -> bool {
    path == "/login" || path.starts_with("/assets/")
}

/// The middleware: who the caller is, or a refusal.
pub(crate) async fn gate(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let path = request.path().to_owned();
    if is_public(&path) {
        return Ok(next.call(request).await?.map_into_left_body());
    }
    let Some(gate) = request.app_data::<web::Data<Gate>>().cloned() else {
        return Err(ApiError::unauthorized().into());
    };
    let is_api = path.starts_with("/api/");
    let Some(caller) = gate.caller(&request) else {
        let response = match is_api {
            true => actix_web::ResponseError::error_response(&ApiError::unauthorized()),
            false => HttpResponse::SeeOther()
                .insert_header((header::LOCATION, "/login"))
                .finish(),
        };
        return Ok(request.into_response(response).map_into_right_body());
    };
    if is_api
        && request.method() == actix_web::http::Method::POST
        && let Err(error) = gate.check_control(&request, &caller)
    {
        let response = actix_web::ResponseError::error_response(&error);
        return Ok(request.into_response(response).map_into_right_body());
    }
    request.extensions_mut().insert(caller);
    Ok(next.call(request).await?.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_check_users_and_tokens_and_hide_secrets() {
        let mut credentials = Credentials::default();
        assert!(!credentials.is_enabled());
        credentials.add_user("admin:s3cret").unwrap();
        credentials.add_token("tok-1").unwrap();
        assert!(credentials.add_user("nopassword").is_err());
        assert!(credentials.add_user(":x").is_err());
        assert!(credentials.add_token("").is_err());
        assert_eq!(
            credentials.user("admin", "s3cret").as_deref(),
            Some("admin")
        );
        assert_eq!(credentials.user("admin", "wrong"), None);
        assert!(credentials.token("tok-1"));
        assert!(!credentials.token("tok-2"));
        let shown = format!("{credentials:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("tok-1"),
            "{shown}"
        );
    }

    #[test]
    fn a_login_makes_a_session_and_a_wrong_one_none() {
        let mut credentials = Credentials::default();
        credentials.add_user("admin:pw").unwrap();
        let gate = Gate::new(credentials, false);
        assert!(gate.log_in("admin", "nope", "").is_none());
        assert!(gate.log_in("", "", "").is_none());
        let id = gate.log_in("admin", "pw", "").unwrap();
        assert_eq!(id.len(), 64);
        assert_ne!(gate.csrf(), id);
        gate.log_out(&id);
        assert!(gate.sessions.lock().unwrap().is_empty());
    }
}
