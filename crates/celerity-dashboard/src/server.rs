//! The HTTP server: routes, the embedded page and its assets, the login form.

use std::sync::Arc;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpRequest, HttpResponse, web};
use serde::Deserialize;

use crate::api::{self, control, letters};
use crate::auth::{self, Gate, SESSION_COOKIE};
use crate::error::{json_body_error, query_error};
use crate::live;
use crate::shared::Shared;

/// The page's files, embedded in the binary: the dashboard needs no internet and no files beside
/// it.
const ASSETS: [(&str, &str, &[u8]); 5] = [
    (
        "login.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/login.js"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/app.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../assets/favicon.svg"),
    ),
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../assets/index.html"),
    ),
];
const INDEX_HTML: &str = include_str!("../assets/index.html");
const LOGIN_HTML: &str = include_str!("../assets/login.html");
/// A JSON body a control takes at most.
const MAX_JSON_BODY: usize = 1 << 20;

/// Headers every page and API answer carries: no framing by other sites, no MIME sniffing, no
/// referrer leaking ids, and a content security policy that allows only this origin.
fn secure(response: &mut HttpResponse) {
    let headers = response.headers_mut();
    let pairs = [
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        // `same-origin`, not `no-referrer`: with `no-referrer` the browser sends `Origin: null` on
        // the login form's POST, which the same-origin check must refuse.
        ("referrer-policy", "same-origin"),
        (
            "content-security-policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ),
    ];
    for (name, value) in pairs {
        headers.insert(
            header::HeaderName::from_static(name),
            header::HeaderValue::from_static(value),
        );
    }
}

fn page(html: &'static str) -> HttpResponse {
    let mut response = HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(html);
    secure(&mut response);
    response
}

async fn index() -> HttpResponse {
    page(INDEX_HTML)
}

async fn asset(name: web::Path<String>) -> HttpResponse {
    match ASSETS.iter().find(|(file, _, _)| *file == name.as_str()) {
        Some((_, content_type, bytes)) => HttpResponse::Ok()
            .content_type(*content_type)
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .body(*bytes),
        None => HttpResponse::NotFound().body("no such asset"),
    }
}

async fn login_page() -> HttpResponse {
    page(LOGIN_HTML)
}

/// The login form's fields.
#[derive(Debug, Deserialize)]
struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    token: String,
}

fn redirect(to: &str) -> actix_web::HttpResponseBuilder {
    let mut builder = HttpResponse::SeeOther();
    builder.insert_header((header::LOCATION, to.to_owned()));
    builder
}

/// `POST /login`: a session cookie and the dashboard, or the login page again saying it failed.
async fn log_in(
    request: HttpRequest,
    gate: web::Data<Gate>,
    form: web::Form<LoginForm>,
) -> HttpResponse {
    if !same_origin(&request) {
        return redirect("/login#failed").finish();
    }
    match gate.log_in(form.username.trim(), &form.password, form.token.trim()) {
        Some(session) => {
            let cookie = Cookie::build(SESSION_COOKIE, session)
                .path("/")
                .http_only(true)
                .same_site(SameSite::Strict)
                .finish();
            redirect("/").cookie(cookie).finish()
        }
        None => {
            tracing::info!("a login was refused");
            redirect("/login#failed").finish()
        }
    }
}

/// `POST /logout`.
async fn log_out(request: HttpRequest, gate: web::Data<Gate>) -> HttpResponse {
    if let Some(cookie) = request.cookie(SESSION_COOKIE) {
        gate.log_out(cookie.value());
    }
    let mut gone = Cookie::build(SESSION_COOKIE, "").path("/").finish();
    gone.make_removal();
    redirect("/login").cookie(gone).finish()
}

/// Whether a form post's `Origin`, when sent, is this host.
fn same_origin(request: &HttpRequest) -> bool {
    let Some(origin) = request.headers().get(header::ORIGIN) else {
        return true;
    };
    let host = request.connection_info().host().to_owned();
    let origin = origin.to_str().unwrap_or_default();
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest == host)
}

async fn api_not_found(request: HttpRequest) -> Result<HttpResponse, crate::ApiError> {
    Err(crate::error::ApiError::not_found(
        "not_found",
        format!(
            "no API route {} {}: see docs/dashboard.md",
            request.method(),
            request.path()
        ),
    ))
}

/// The routes, for one actix worker.
pub(crate) fn configure(
    config: &mut web::ServiceConfig,
    shared: Arc<Shared>,
    gate: web::Data<Gate>,
) {
    let api = web::scope("/api")
        .route("/session", web::get().to(api::session))
        .route("/overview", web::get().to(api::overview))
        .route("/stream", web::get().to(live::stream))
        .route("/workers", web::get().to(api::workers))
        .route("/workers/{hostname}", web::get().to(api::worker))
        .route(
            "/workers/{hostname}/{action}",
            web::post().to(control::worker_action),
        )
        .route("/tasks", web::get().to(api::tasks))
        .route("/tasks/{id}", web::get().to(api::task))
        .route("/tasks/{id}/revoke", web::post().to(control::revoke))
        .route("/canvases/{root_id}", web::get().to(api::canvas))
        .route("/queues", web::get().to(api::queues))
        .route("/rate-limits", web::post().to(control::rate_limit))
        .route(
            "/priority-weights",
            web::post().to(control::priority_weights),
        )
        .route("/dead-letters", web::get().to(letters::list))
        .route("/dead-letters/requeue", web::post().to(letters::requeue))
        .route("/dead-letters/purge", web::post().to(letters::purge))
        .route("/dead-letters/{seq}", web::get().to(letters::show))
        .default_service(web::to(api_not_found));
    config
        .app_data(web::Data::new(shared))
        .app_data(gate)
        .app_data(
            web::JsonConfig::default()
                .limit(MAX_JSON_BODY)
                .error_handler(json_body_error),
        )
        .app_data(web::QueryConfig::default().error_handler(query_error))
        .app_data(web::PathConfig::default().error_handler(|error, _| {
            crate::error::ApiError::bad_request(format!("the path is malformed: {error}")).into()
        }))
        .service(api)
        .route("/", web::get().to(index))
        .route("/assets/{name}", web::get().to(asset))
        .route("/login", web::get().to(login_page))
        .route("/login", web::post().to(log_in))
        .route("/logout", web::post().to(log_out));
}

/// An app with the gate in front of every route.
pub(crate) fn app(
    shared: Arc<Shared>,
    gate: web::Data<Gate>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .wrap(from_fn(auth::gate))
        .configure(move |config| configure(config, shared, gate))
}
