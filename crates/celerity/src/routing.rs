//! Routing: which queue, and at which priority, a task is sent to.
//!
//! Resolution follows Celery's order: a queue named at the call wins, then router functions (in
//! the order they were added; the first that answers wins), then routes by exact task name or glob
//! (`"tasks.bulk_*"`, first match wins), then the task's own `queue` attribute, then the default
//! queue. A priority comes from the call, else from the router or route that chose the queue, else 0.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use celerity_proto::{InvalidName, Priority, QueueName};
use globset::{Glob, GlobMatcher};
use serde_json::{Map, Value};

/// What a router function decides for a task.
///
/// [`Route::to`] and [`Route::priority`] keep an invalid queue name or priority in the route
/// instead of dropping it, so a router stays a one-liner: the send that the route decides fails
/// with [`EnqueueError::InvalidRoute`](crate::EnqueueError::InvalidRoute), which names the rule
/// broken. [`Route::try_to`] checks the queue at once.
///
/// ```
/// use celerity::routing::Route;
/// let route = Route::to("high").priority(9);
/// assert_eq!(route.queue.as_ref().map(|queue| queue.as_str()), Some("high"));
/// assert!(route.check().is_ok());
/// assert!(Route::to("no.dots").check().is_err());
/// assert!(Route::to("high").priority(10).check().is_err());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Route {
    /// The queue, if the router picks one.
    pub queue: Option<QueueName>,
    /// The priority, if the router picks one.
    pub priority: Option<Priority>,
    /// The first invalid queue name or priority given to the builder.
    invalid: Option<InvalidName>,
}

impl Route {
    /// A route to `queue`. An invalid queue name is kept in the route, and fails the send it
    /// routes (see [`Route::check`]).
    pub fn to(queue: &str) -> Self {
        Self::try_to(queue).unwrap_or_else(|error| Self {
            invalid: Some(error),
            ..Self::default()
        })
    }

    /// A route to `queue`, checked.
    ///
    /// # Errors
    /// The queue name's rule.
    pub fn try_to(queue: &str) -> Result<Self, InvalidName> {
        Ok(Self {
            queue: Some(QueueName::new(queue)?),
            priority: None,
            invalid: None,
        })
    }

    /// Also sets the priority (0 to 9). One out of range is kept in the route, and fails the send
    /// it routes (see [`Route::check`]).
    pub fn priority(mut self, priority: u8) -> Self {
        match Priority::new(priority) {
            Ok(priority) => self.priority = Some(priority),
            Err(error) => {
                self.invalid.get_or_insert(error);
            }
        }
        self
    }

    /// Whether the queue name and priority given to [`Route::to`] and [`Route::priority`] were
    /// valid.
    ///
    /// # Errors
    /// The first invalid one, with the rule it breaks.
    pub fn check(&self) -> Result<(), InvalidName> {
        match &self.invalid {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }
}

/// A router function: sees the task name, positional and named arguments, and may pick a route.
pub type RouterFn = dyn Fn(&str, &[Value], &Map<String, Value>) -> Option<Route> + Send + Sync;

/// A route by task name: an exact name, or a glob where `*` matches any run of characters (with
/// `globset`'s syntax: `?`, `[abc]` and `{a,b}` too).
#[derive(Debug, Clone)]
pub(crate) struct NameRule {
    pattern: String,
    matcher: GlobMatcher,
    queue: QueueName,
    priority: Option<Priority>,
}

impl NameRule {
    /// A rule routing the task names that `pattern` matches to `queue`.
    ///
    /// # Errors
    /// When `pattern` is not a valid glob.
    pub(crate) fn new(
        pattern: String,
        queue: QueueName,
        priority: Option<Priority>,
    ) -> Result<Self, globset::Error> {
        let matcher = Glob::new(&pattern)?.compile_matcher();
        Ok(Self {
            pattern,
            matcher,
            queue,
            priority,
        })
    }

    pub(crate) fn pattern(&self) -> &str {
        &self.pattern
    }

    pub(crate) fn queue(&self) -> &QueueName {
        &self.queue
    }

    fn matches(&self, name: &str) -> bool {
        self.matcher.is_match(name)
    }
}

/// Everything that routes tasks, shared by producers and workers of one app.
#[derive(Clone, Default)]
pub(crate) struct Routes {
    routers: Vec<Arc<RouterFn>>,
    rules: Vec<NameRule>,
    /// The `queue` attribute of each registered task.
    task_queues: HashMap<String, QueueName>,
    default_queue: QueueName,
    /// The priority levels in use, lowest first; empty means all.
    steps: Vec<Priority>,
}

impl fmt::Debug for Routes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Routes")
            .field("routers", &self.routers.len())
            .field("rules", &self.rules)
            .field("task_queues", &self.task_queues)
            .field("default_queue", &self.default_queue)
            .finish()
    }
}

impl Routes {
    pub(crate) fn new(
        routers: Vec<Arc<RouterFn>>,
        rules: Vec<NameRule>,
        task_queues: HashMap<String, QueueName>,
        default_queue: QueueName,
    ) -> Self {
        Self {
            routers,
            rules,
            task_queues,
            default_queue,
            steps: Vec::new(),
        }
    }

    /// Rounds priorities to `steps` (lowest first).
    pub(crate) fn with_steps(mut self, steps: Vec<Priority>) -> Self {
        self.steps = steps;
        self
    }

    /// `priority` rounded down to the nearest step (up to the lowest step when below it).
    pub(crate) fn to_step(&self, priority: Priority) -> Priority {
        match self.steps.iter().rev().find(|step| **step <= priority) {
            Some(step) => *step,
            None => self.steps.first().copied().unwrap_or(priority),
        }
    }

    /// Routes with only a default queue.
    pub(crate) fn default_only(default_queue: QueueName) -> Self {
        Self {
            default_queue,
            ..Self::default()
        }
    }

    /// The queue and priority of a task: `explicit` ones from the call win; `task_queue` is the
    /// task's own attribute when the caller knows it (else the registered one is used).
    ///
    /// # Errors
    /// The invalid queue name or priority of the route a router function returned.
    pub(crate) fn resolve(
        &self,
        name: &str,
        args: &[Value],
        kwargs: &Map<String, Value>,
        explicit_queue: Option<QueueName>,
        explicit_priority: Option<Priority>,
        task_queue: Option<QueueName>,
    ) -> Result<(QueueName, Priority), InvalidName> {
        let routed = || -> Result<Option<(QueueName, Option<Priority>)>, InvalidName> {
            for router in &self.routers {
                if let Some(route) = router(name, args, kwargs) {
                    route.check()?;
                    if let Some(queue) = route.queue {
                        return Ok(Some((queue, route.priority)));
                    }
                }
            }
            Ok(self
                .rules
                .iter()
                .find(|rule| rule.matches(name))
                .map(|rule| (rule.queue.clone(), rule.priority)))
        };
        let (queue, routed_priority) = match explicit_queue {
            Some(queue) => (queue, None),
            None => match routed()? {
                Some(found) => found,
                None => {
                    let queue = task_queue
                        .or_else(|| self.task_queues.get(name).cloned())
                        .unwrap_or_else(|| self.default_queue.clone());
                    (queue, None)
                }
            },
        };
        // A router may set only a priority (no queue) for a task: honour it too.
        let router_priority = || -> Result<Option<Priority>, InvalidName> {
            for router in &self.routers {
                if let Some(route) = router(name, args, kwargs) {
                    route.check()?;
                    if route.priority.is_some() {
                        return Ok(route.priority);
                    }
                }
            }
            Ok(None)
        };
        let priority = match explicit_priority.or(routed_priority) {
            Some(priority) => priority,
            None => router_priority()?.unwrap_or_default(),
        };
        Ok((queue, self.to_step(priority)))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn q(name: &str) -> QueueName {
        QueueName::new(name).unwrap()
    }

    fn routes() -> Routes {
        let urgent: Arc<RouterFn> = Arc::new(|_name, _args, kwargs| {
            kwargs
                .get("urgent")
                .and_then(Value::as_bool)
                .filter(|urgent| *urgent)
                .map(|_| Route::to("high").priority(9))
        });
        let big_orders: Arc<RouterFn> = Arc::new(|name, args, _kwargs| {
            let total = args
                .first()
                .and_then(|order| order.get("total"))
                .and_then(Value::as_f64)?;
            (name == "orders.process" && total > 1000.0).then(|| Route::to("premium").priority(8))
        });
        let rules = vec![
            NameRule::new("tasks.critical".into(), q("high"), None).unwrap(),
            NameRule::new(
                "tasks.bulk_*".into(),
                q("low"),
                Some(Priority::new(1).unwrap()),
            )
            .unwrap(),
        ];
        let task_queues = HashMap::from([
            ("tasks.mailer".to_owned(), q("email")),
            ("tasks.bulk_mail".to_owned(), q("email")),
        ]);
        Routes::new(vec![urgent, big_orders], rules, task_queues, q("default"))
    }

    fn resolve(name: &str, args: Value, kwargs: Value, explicit: Option<&str>) -> (String, u8) {
        let args = args.as_array().cloned().unwrap_or_default();
        let kwargs = kwargs.as_object().cloned().unwrap_or_default();
        let (queue, priority) = routes()
            .resolve(name, &args, &kwargs, explicit.map(q), None, None)
            .unwrap();
        (queue.to_string(), priority.get())
    }

    #[test]
    fn resolution_follows_celerys_order() {
        // Call time beats everything.
        assert_eq!(
            resolve(
                "tasks.bulk_x",
                json!([]),
                json!({"urgent": true}),
                Some("adhoc")
            ),
            ("adhoc".into(), 9)
        );
        // Router functions beat name routes and attributes, with content-based decisions.
        assert_eq!(
            resolve("tasks.bulk_x", json!([]), json!({"urgent": true}), None),
            ("high".into(), 9)
        );
        assert_eq!(
            resolve("orders.process", json!([{"total": 1500}]), json!({}), None),
            ("premium".into(), 8)
        );
        assert_eq!(
            resolve("orders.process", json!([{"total": 10}]), json!({}), None),
            ("default".into(), 0)
        );
        // Exact and glob routes beat the task's own queue.
        assert_eq!(
            resolve("tasks.critical", json!([]), json!({}), None),
            ("high".into(), 0)
        );
        assert_eq!(
            resolve("tasks.bulk_mail", json!([]), json!({}), None),
            ("low".into(), 1)
        );
        // The task's own queue beats the default.
        assert_eq!(
            resolve("tasks.mailer", json!([]), json!({}), None),
            ("email".into(), 0)
        );
        assert_eq!(
            resolve("tasks.other", json!([]), json!({}), None),
            ("default".into(), 0)
        );
    }

    #[test]
    fn globs_match_like_shell_stars() {
        let matches = |pattern: &str, name: &str| {
            NameRule::new(pattern.to_owned(), q("low"), None)
                .unwrap()
                .matches(name)
        };
        assert!(matches("tasks.bulk_*", "tasks.bulk_"));
        assert!(matches("tasks.bulk_*", "tasks.bulk_email"));
        assert!(matches("*.report", "daily.report"));
        assert!(matches("a*b*c", "aXbYc"));
        assert!(!matches("a*b*c", "aXcYb"));
        assert!(!matches("tasks.bulk_*", "tasks.bulk"));
        assert!(matches("exact", "exact") && !matches("exact", "exactly"));
    }

    #[test]
    fn an_invalid_glob_is_refused() {
        assert!(NameRule::new("tasks.[bulk".to_owned(), q("low"), None).is_err());
    }

    #[test]
    fn a_router_with_an_invalid_queue_or_priority_fails_the_resolution() {
        for route in [Route::to("no.dots"), Route::to("high").priority(10)] {
            let router: Arc<RouterFn> = Arc::new(move |_, _, _| Some(route.clone()));
            let routes = Routes::new(vec![router], Vec::new(), HashMap::new(), q("default"));
            let error = routes
                .resolve("tasks.any", &[], &Map::new(), None, None, None)
                .unwrap_err();
            assert!(!error.rule.is_empty(), "{error}");
        }
    }

    #[test]
    fn a_priority_only_router_with_an_invalid_priority_fails_even_with_an_explicit_queue() {
        let router: Arc<RouterFn> = Arc::new(|_, _, _| Some(Route::default().priority(10)));
        let routes = Routes::new(vec![router], Vec::new(), HashMap::new(), q("default"));
        assert!(
            routes
                .resolve("tasks.any", &[], &Map::new(), Some(q("adhoc")), None, None)
                .is_err()
        );
    }
}

#[cfg(test)]
mod step_tests {
    use super::*;

    #[test]
    fn priorities_round_down_to_steps() {
        let steps = [0, 3, 6, 9].map(|p| Priority::new(p).unwrap()).to_vec();
        let routes = Routes::default_only(QueueName::default()).with_steps(steps);
        let rounded: Vec<u8> = (0..=9)
            .map(|p| routes.to_step(Priority::new(p).unwrap()).get())
            .collect();
        assert_eq!(rounded, vec![0, 0, 0, 3, 3, 3, 6, 6, 6, 9]);
        let high_only =
            Routes::default_only(QueueName::default()).with_steps(vec![Priority::new(5).unwrap()]);
        assert_eq!(
            high_only.to_step(Priority::new(1).unwrap()).get(),
            5,
            "below the lowest step rounds up to it"
        );
    }
}
