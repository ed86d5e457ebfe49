//! Dead letters (`/api/dead-letters`): browse, read, requeue and purge, through
//! [`celerity::dead_letters::DeadLetters`].

use actix_web::{HttpResponse, web};
use base64::Engine as _;
use celerity::dead_letters::{DeadLetterError, DeadLetters, Letter, LetterFilter, Page};
use celerity_proto::QueueName;
use serde::Deserialize;
use serde_json::{Value, json};

use super::SharedData;
use crate::error::ApiError;

/// Body bytes a letter's page shows at most.
const MAX_BODY_SHOWN: usize = 64 * 1024;
/// Letters one "requeue all" or "purge all" request handles at most.
const MAX_PER_REQUEST: usize = 10_000;

fn letters(shared: &SharedData) -> Result<DeadLetters, ApiError> {
    let nats = shared.nats()?;
    Ok(DeadLetters::new(nats.client, shared.layout.clone()))
}

fn letter_error(error: DeadLetterError) -> ApiError {
    match error {
        DeadLetterError::NotFound { .. } => ApiError::not_found("not_found", error.to_string()),
        DeadLetterError::BodyDropped { .. }
        | DeadLetterError::NoTaskId { .. }
        | DeadLetterError::NotRequeueable { .. } => ApiError::new(
            actix_web::http::StatusCode::CONFLICT,
            "not_requeueable",
            error.to_string(),
        ),
        other => ApiError::nats(crate::ingest::celerity_error_chain(&other)),
    }
}

/// The row of a letter in the list.
fn row(letter: &Letter) -> Value {
    let dead = letter.dead_letter.as_ref();
    json!({
        "seq": letter.seq,
        "queue": letter.queue,
        "task": letter.task,
        "task_id": letter.task_id,
        "reason": letter.reason,
        "error": dead.map(|dead| dead.error.as_str()),
        "worker": dead.map(|dead| dead.worker.as_str()),
        "deliveries": dead.map(|dead| dead.deliveries),
        "time_ms": dead.map_or(letter.stored_at_ms, |dead| dead.time_ms),
        "subject": dead.map(|dead| dead.subject.as_str()),
        "size": letter.size,
        "body_dropped": letter.body_dropped,
    })
}

/// The query of `GET /api/dead-letters`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct LettersQuery {
    queue: Option<String>,
    reason: Option<String>,
    page: Option<u64>,
    per_page: Option<usize>,
}

fn filter_of(queue: Option<&str>, reason: Option<&str>) -> Result<LetterFilter, ApiError> {
    let mut filter = LetterFilter::all();
    if let Some(queue) = queue.map(str::trim).filter(|queue| !queue.is_empty()) {
        let queue = QueueName::new(queue)
            .map_err(|error| ApiError::invalid_filter("queue", &error.to_string()))?;
        filter = filter.queue(queue);
    }
    if let Some(reason) = reason.map(str::trim).filter(|reason| !reason.is_empty()) {
        if celerity_proto::DeadLetterReason::parse(reason).is_none() {
            return Err(ApiError::invalid_filter(
                "reason",
                &format!(
                    "{reason:?} is not a dead-letter reason code (e.g. unknown_task, bad_arguments)"
                ),
            ));
        }
        filter = filter.reason(reason);
    }
    Ok(filter)
}

/// `GET /api/dead-letters`.
pub(crate) async fn list(
    shared: SharedData,
    query: web::Query<LettersQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let filter = filter_of(query.queue.as_deref(), query.reason.as_deref())?;
    let page = query.page.unwrap_or(1).max(1);
    let per_page = query.per_page.unwrap_or(50);
    if !(1..=500).contains(&per_page) {
        return Err(ApiError::invalid_filter(
            "per_page",
            "give 1 to 500 letters per page",
        ));
    }
    let offset = (page - 1) * per_page as u64;
    let listed = letters(&shared)?
        .list(&filter, Page::new(offset, per_page))
        .await
        .map_err(letter_error)?;
    Ok(HttpResponse::Ok().json(json!({
        "total": listed.total,
        "page": page,
        "per_page": per_page,
        "letters": listed.letters.iter().map(row).collect::<Vec<_>>(),
    })))
}

/// `GET /api/dead-letters/{seq}`: the row, its headers and its body.
pub(crate) async fn show(
    shared: SharedData,
    seq: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let letter = letters(&shared)?.get(*seq).await.map_err(letter_error)?;
    let mut view = row(&letter);
    let shown = &letter.body[..letter.body.len().min(MAX_BODY_SHOWN)];
    let (text, base64) = match std::str::from_utf8(shown) {
        Ok(text) => (Some(text.to_owned()), None),
        Err(_) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(shown)),
        ),
    };
    view["headers"] = json!(letter.headers);
    view["body"] = json!(text);
    view["body_base64"] = json!(base64);
    view["body_truncated"] = json!(letter.body.len() > MAX_BODY_SHOWN);
    Ok(HttpResponse::Ok().json(view))
}

/// The body of a requeue or purge: some letters, or all (of one queue).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Selection {
    #[serde(default)]
    seqs: Vec<u64>,
    #[serde(default)]
    all: bool,
    #[serde(default)]
    queue: Option<String>,
}

impl Selection {
    fn check(&self) -> Result<(), ApiError> {
        match (self.seqs.is_empty(), self.all) {
            (true, false) => Err(ApiError::invalid_argument(
                "name the letters: give seqs, or all: true (with queue to keep to one queue)",
            )),
            (false, true) => Err(ApiError::invalid_argument("give seqs or all, not both")),
            _ => Ok(()),
        }
    }
}

/// `POST /api/dead-letters/requeue`.
pub(crate) async fn requeue(
    shared: SharedData,
    body: web::Json<Selection>,
) -> Result<HttpResponse, ApiError> {
    body.check()?;
    let letters = letters(&shared)?;
    let seqs = match body.all {
        false => body.seqs.clone(),
        true => {
            let filter = filter_of(body.queue.as_deref(), None)?;
            let listed = letters
                .list(&filter, Page::new(0, MAX_PER_REQUEST))
                .await
                .map_err(letter_error)?;
            listed
                .letters
                .iter()
                .rev()
                .map(|letter| letter.seq)
                .collect()
        }
    };
    let (mut requeued, mut failed) = (Vec::new(), Vec::new());
    for seq in seqs {
        match letters.requeue(seq).await {
            Ok(task_id) => requeued.push(json!({ "seq": seq, "task_id": task_id.as_str() })),
            Err(error) => failed.push(json!({ "seq": seq, "message": error.to_string() })),
        }
    }
    Ok(HttpResponse::Ok().json(json!({ "requeued": requeued, "failed": failed })))
}

/// `POST /api/dead-letters/purge`.
pub(crate) async fn purge(
    shared: SharedData,
    body: web::Json<Selection>,
) -> Result<HttpResponse, ApiError> {
    body.check()?;
    let letters = letters(&shared)?;
    let purged = match body.all {
        true => {
            let filter = filter_of(body.queue.as_deref(), None)?;
            letters.purge(&filter).await.map_err(letter_error)?
        }
        false => {
            let mut purged = 0;
            for seq in &body.seqs {
                match letters.delete(*seq).await {
                    Ok(()) => purged += 1,
                    Err(DeadLetterError::NotFound { .. }) => {}
                    Err(error) => return Err(letter_error(error)),
                }
            }
            purged
        }
    };
    Ok(HttpResponse::Ok().json(json!({ "purged": purged })))
}
