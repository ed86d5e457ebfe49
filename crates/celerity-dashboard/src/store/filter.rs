//! The task list's filters and pages: what `GET /api/tasks` takes, checked before the store is
//! read, so a malformed filter is a typed error naming the parameter.

use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};

use super::{Store, TaskSummary};
use crate::error::ApiError;

/// The states a filter may name.
const STATES: [&str; 7] = [
    "PENDING", "RECEIVED", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED",
];
/// The largest page.
const MAX_PER_PAGE: usize = 500;

/// The query string of `GET /api/tasks`, as given.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct TaskQuery {
    pub(crate) name: Option<String>,
    pub(crate) state: Option<String>,
    pub(crate) queue: Option<String>,
    pub(crate) worker: Option<String>,
    pub(crate) since: Option<String>,
    pub(crate) until: Option<String>,
    pub(crate) q: Option<String>,
    pub(crate) page: Option<String>,
    pub(crate) per_page: Option<String>,
}

/// A checked filter.
#[derive(Debug, Default)]
pub(crate) struct TaskFilter {
    name: Option<GlobMatcher>,
    states: Vec<&'static str>,
    queue: Option<String>,
    worker: Option<String>,
    since_ms: Option<u64>,
    until_ms: Option<u64>,
    id_prefix: Option<String>,
    page: usize,
    per_page: usize,
}

/// One page of tasks.
#[derive(Debug, Serialize)]
pub(crate) struct TaskPage {
    pub(crate) total: usize,
    pub(crate) page: usize,
    pub(crate) per_page: usize,
    pub(crate) tasks: Vec<TaskSummary>,
}

fn non_empty(value: Option<String>) -> Option<String> {
    value
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

fn number(parameter: &str, value: Option<String>) -> Result<Option<u64>, ApiError> {
    non_empty(value)
        .map(|value| {
            value.parse::<u64>().map_err(|_| {
                ApiError::invalid_filter(
                    parameter,
                    &format!("{value:?} is not a whole number (Unix milliseconds for times)"),
                )
            })
        })
        .transpose()
}

impl TaskFilter {
    /// Checks a query string.
    pub(crate) fn parse(query: TaskQuery) -> Result<Self, ApiError> {
        let name = non_empty(query.name)
            .map(|pattern| {
                let pattern = if pattern.contains(['*', '?', '[']) {
                    pattern
                } else {
                    format!("*{pattern}*")
                };
                Glob::new(&pattern)
                    .map(|glob| glob.compile_matcher())
                    .map_err(|error| ApiError::invalid_filter("name", &error.to_string()))
            })
            .transpose()?;
        let states = match non_empty(query.state) {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|state| {
                    let state = state.trim().to_ascii_uppercase();
                    STATES
                        .into_iter()
                        .find(|known| *known == state)
                        .ok_or_else(|| {
                            ApiError::invalid_filter(
                                "state",
                                &format!(
                                    "{state:?} is not a state; use one of {}",
                                    STATES.join(", ")
                                ),
                            )
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        let since_ms = number("since", query.since)?;
        let until_ms = number("until", query.until)?;
        if let (Some(since), Some(until)) = (since_ms, until_ms)
            && since > until
        {
            return Err(ApiError::invalid_filter(
                "until",
                "the end of the time range is before its start",
            ));
        }
        let page = number("page", query.page)?.unwrap_or(1).max(1) as usize;
        let per_page = number("per_page", query.per_page)?.unwrap_or(50) as usize;
        if !(1..=MAX_PER_PAGE).contains(&per_page) {
            return Err(ApiError::invalid_filter(
                "per_page",
                &format!("give 1 to {MAX_PER_PAGE} tasks per page"),
            ));
        }
        Ok(Self {
            name,
            states,
            queue: non_empty(query.queue),
            worker: non_empty(query.worker),
            since_ms,
            until_ms,
            id_prefix: non_empty(query.q),
            page,
            per_page,
        })
    }

    fn matches(&self, task: &TaskSummary) -> bool {
        let equal = |wanted: &Option<String>, value: &Option<String>| {
            wanted
                .as_ref()
                .is_none_or(|wanted| value.as_ref() == Some(wanted))
        };
        self.name
            .as_ref()
            .is_none_or(|name| name.is_match(&task.name))
            && (self.states.is_empty() || self.states.contains(&task.state))
            && equal(&self.queue, &task.queue)
            && equal(&self.worker, &task.worker)
            && self.since_ms.is_none_or(|since| task.updated_ms >= since)
            && self.until_ms.is_none_or(|until| task.updated_ms <= until)
            && self
                .id_prefix
                .as_ref()
                .is_none_or(|prefix| task.id.starts_with(prefix.as_str()))
    }
}

impl Store {
    /// The page of tasks `filter` asks for, the most recently updated first.
    pub(crate) fn tasks(&self, filter: &TaskFilter) -> TaskPage {
        let skip = (filter.page - 1) * filter.per_page;
        let mut total = 0;
        let mut tasks = Vec::new();
        for id in self.order.values().rev() {
            let Some(entry) = self.tasks.get(id) else {
                continue;
            };
            if !filter.matches(&entry.summary) {
                continue;
            }
            if total >= skip && tasks.len() < filter.per_page {
                tasks.push(entry.summary.clone());
            }
            total += 1;
        }
        TaskPage {
            total,
            page: filter.page,
            per_page: filter.per_page,
            tasks,
        }
    }
}
