//! The application: the registry of task types, the routes and the beat entries, and the builder
//! that checks them into [`crate::Settings`].
//!
//! An [`App`] does no I/O; [`App::client`] connects a producer and `celerity::cli` / the worker
//! module run workers from it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use celerity_proto::{ContentType, InvalidName, Namespace, Priority, QueueName, TaskName};

use crate::beat::{Entry, ScheduleError, check_unique};
use crate::client::Client;
use crate::error::ClientError;
use crate::nats::NatsConfig;
use crate::routing::{NameRule, Route, RouterFn, Routes};
use crate::settings::Settings;
use crate::storage::Storage;
use crate::task::{Registered, Task};

/// The app could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A name (namespace, queue, task) breaks its rule.
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    /// Two periodic entries share a name.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// Two task types were registered under one name.
    #[error("task name {0:?} is registered twice")]
    DuplicateTask(String),
    /// A route, or a task's own queue, names a queue that is not among the declared queues.
    #[error("{what} sends to queue {queue:?}, which is not declared (declared: {declared})")]
    UnknownQueue {
        /// What routes there (`route "tasks.bulk_*"`, `task tasks.add`).
        what: String,
        /// The queue.
        queue: String,
        /// The declared queues.
        declared: String,
    },
    /// A storage setting (replicas, a size limit) is out of range.
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    /// Tracing could not be set up from the `OTEL_*` environment.
    #[error("cannot set up tracing from the OTEL_* environment")]
    Telemetry(#[source] crate::telemetry::TelemetryError),
    /// A route's pattern is not a valid glob.
    #[error("route pattern {pattern:?} is not a valid glob")]
    InvalidPattern {
        /// The pattern.
        pattern: String,
        /// The glob parser's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A setting is out of range.
    #[error("setting {setting} has invalid value {value}: {reason}")]
    InvalidSetting {
        /// The setting.
        setting: &'static str,
        /// The value given.
        value: String,
        /// Why it is rejected.
        reason: &'static str,
    },
}

/// A Celerity application: its task types and settings.
///
/// ```
/// #[celerity::task]
/// async fn add(x: i64, y: i64) -> i64 {
///     x + y
/// }
///
/// let app = celerity::App::builder().task(add).build()?;
/// assert_eq!(app.task_names().count(), 1);
/// # Ok::<(), celerity::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct App {
    inner: Arc<AppInner>,
}

#[derive(Debug, Clone)]
struct AppInner {
    tasks: HashMap<TaskName, Registered>,
    settings: Settings,
    beat: Vec<Entry>,
}

impl App {
    /// Starts building an app.
    pub fn builder() -> AppBuilder {
        AppBuilder::default()
    }

    /// The app's settings.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The registered task names.
    pub fn task_names(&self) -> impl Iterator<Item = &TaskName> {
        self.inner.tasks.keys()
    }

    /// The periodic entries declared in code ([`AppBuilder::beat`]).
    pub fn beat_entries(&self) -> &[Entry] {
        &self.inner.beat
    }

    /// This app with other storage settings: how a worker's `--replicas` and `--*-max-*` flags
    /// override what the code set.
    ///
    /// # Errors
    /// [`StorageError`](crate::StorageError) for a setting out of range.
    pub fn with_storage(&self, storage: Storage) -> Result<App, crate::StorageError> {
        storage.check()?;
        let mut inner = AppInner::clone(&self.inner);
        inner.settings.storage = storage;
        Ok(App {
            inner: Arc::new(inner),
        })
    }

    pub(crate) fn task(&self, name: &TaskName) -> Option<&Registered> {
        self.inner.tasks.get(name)
    }

    /// Connects a producer with this app's settings.
    ///
    /// # Errors
    /// [`ClientError`] when NATS is unreachable or the results bucket cannot be opened.
    ///
    /// # Cancel safety
    /// Cancel-safe: a dropped call leaves at most a connection and buckets that are closed or
    /// already exist.
    pub async fn client(&self, nats: &NatsConfig) -> Result<Client, ClientError> {
        Client::connect(nats, self.inner.settings.clone()).await
    }
}

/// Builds an [`App`].
#[derive(Default)]
pub struct AppBuilder {
    tasks: Vec<Registered>,
    settings: Settings,
    errors: Vec<ConfigError>,
    routers: Vec<Arc<RouterFn>>,
    rules: Vec<NameRule>,
    declared_queues: Option<Vec<QueueName>>,
    beat: Vec<Entry>,
    telemetry: Option<crate::telemetry::Telemetry>,
}

impl std::fmt::Debug for AppBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppBuilder")
            .field("tasks", &self.tasks.len())
            .field("settings", &self.settings)
            .field("routers", &self.routers.len())
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl AppBuilder {
    /// Registers a task type.
    pub fn task<T: Task>(mut self, _task: T) -> Self {
        let options = T::options();
        let name = TaskName::new(T::NAME);
        let queue = options.queue_name().map(QueueName::new).transpose();
        match (name, queue) {
            (Ok(name), Ok(_)) => self.tasks.push(Registered {
                name,
                options,
                run: T::run,
            }),
            (Err(error), _) | (_, Err(error)) => self.errors.push(error.into()),
        }
        self
    }

    /// Routes tasks whose name is `pattern` (an exact name, or a glob with `*`, like
    /// `"tasks.bulk_*"`) to `queue`. Routes are tried in the order added, after router functions.
    pub fn route(self, pattern: &str, queue: &str) -> Self {
        self.route_rule(pattern, queue, None)
    }

    /// Like [`AppBuilder::route`], also setting the priority (0 to 9) of the tasks it routes.
    pub fn route_with_priority(self, pattern: &str, queue: &str, priority: u8) -> Self {
        self.route_rule(pattern, queue, Some(priority))
    }

    fn route_rule(mut self, pattern: &str, queue: &str, priority: Option<u8>) -> Self {
        let queue = QueueName::new(queue);
        let priority = priority.map(Priority::new).transpose();
        match (queue, priority) {
            (Ok(queue), Ok(priority)) => match NameRule::new(pattern.to_owned(), queue, priority) {
                Ok(rule) => self.rules.push(rule),
                Err(error) => self.errors.push(ConfigError::InvalidPattern {
                    pattern: pattern.to_owned(),
                    source: Box::new(error),
                }),
            },
            (Err(error), _) | (_, Err(error)) => self.errors.push(error.into()),
        }
        self
    }

    /// Adds a router function: it sees the task name, positional and named arguments, and may
    /// pick a queue and priority (content-based routing). Router functions are tried in the order
    /// added, before name routes; the first that returns a queue wins.
    ///
    /// ```
    /// use celerity::routing::Route;
    /// let app = celerity::App::builder()
    ///     .queues(["high", "default", "low"])
    ///     .router(|_name, _args, kwargs| {
    ///         kwargs.get("urgent").and_then(|urgent| urgent.as_bool()).filter(|u| *u).map(|_| Route::to("high").priority(9))
    ///     })
    ///     .route("tasks.bulk_*", "low")
    ///     .build()?;
    /// # let _ = app;
    /// # Ok::<(), celerity::ConfigError>(())
    /// ```
    pub fn router(
        mut self,
        router: impl Fn(
            &str,
            &[serde_json::Value],
            &serde_json::Map<String, serde_json::Value>,
        ) -> Option<Route>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.routers.push(Arc::new(router));
        self
    }

    /// Declares the queues of the deployment: routes and task attributes that name another queue
    /// are refused by [`AppBuilder::build`] (a typo would otherwise send tasks where no worker
    /// listens).
    pub fn queues<S: AsRef<str>>(mut self, queues: impl IntoIterator<Item = S>) -> Self {
        let mut declared = Vec::new();
        for queue in queues {
            match QueueName::new(queue.as_ref()) {
                Ok(queue) => declared.push(queue),
                Err(error) => self.errors.push(error.into()),
            }
        }
        self.declared_queues = Some(declared);
        self
    }

    /// Uses only these priority levels (Celery's `priority_steps`), e.g. `[0, 3, 6, 9]`: priorities
    /// are rounded down to a step, queues accept only the steps, and workers consume only them.
    /// Every app of a deployment must use the same steps.
    pub fn priority_steps(mut self, steps: impl IntoIterator<Item = u8>) -> Self {
        let mut levels = Vec::new();
        for step in steps {
            match Priority::new(step) {
                Ok(level) => levels.push(level),
                Err(error) => self.errors.push(error.into()),
            }
        }
        levels.sort();
        levels.dedup();
        if levels.is_empty() {
            self.errors.push(ConfigError::InvalidSetting {
                setting: "priority_steps",
                value: "[]".to_owned(),
                reason: "give at least one priority level",
            });
        }
        self.settings.priority_steps = levels;
        self
    }

    /// Sets the namespace (default `celerity`).
    pub fn namespace(mut self, namespace: &str) -> Self {
        match Namespace::new(namespace) {
            Ok(namespace) => self.settings.namespace = namespace,
            Err(error) => self.errors.push(error.into()),
        }
        self
    }

    /// Sets the default queue (default `default`).
    pub fn default_queue(mut self, queue: &str) -> Self {
        match QueueName::new(queue) {
            Ok(queue) => self.settings.default_queue = queue,
            Err(error) => self.errors.push(error.into()),
        }
        self
    }

    /// Sets how long results are kept (default 24 hours, at least 1 second).
    pub fn result_expires(mut self, expiry: Duration) -> Self {
        if expiry < Duration::from_secs(1) {
            self.errors.push(ConfigError::InvalidSetting {
                setting: "result_expires",
                value: format!("{expiry:?}"),
                reason: "use at least 1 second",
            });
        }
        self.settings.result_expires = expiry;
        self
    }

    /// Sets the replicas, placement and size limits of the streams and buckets (default
    /// [`Storage::default`]: one replica, limits in its docs).
    pub fn storage(mut self, storage: Storage) -> Self {
        if let Err(error) = storage.check() {
            self.errors.push(error.into());
        }
        self.settings.storage = storage;
        self
    }

    /// Sets how many copies of every stream and bucket a cluster keeps (1 to 5, default 1; 3 on
    /// a cluster of three JetStream servers), keeping the other storage settings.
    pub fn replicas(self, replicas: usize) -> Self {
        let storage = Storage {
            replicas,
            ..self.settings.storage.clone()
        };
        self.storage(storage)
    }

    /// Records RECEIVED when a worker takes a task (default off, as in Celery, where RECEIVED is
    /// only an event).
    pub fn track_received(mut self, track: bool) -> Self {
        self.settings.track_received = track;
        self
    }

    /// Encodes task bodies and results as `content_type` (default JSON).
    pub fn content_type(mut self, content_type: ContentType) -> Self {
        self.settings.content_type = content_type;
        self
    }

    /// Runs `signals`' hooks at the moments of a task's and a worker's life they name (Celery's
    /// `celery.signals`); see [`crate::signals`]. A second call replaces the first.
    pub fn signals(mut self, signals: crate::signals::Signals) -> Self {
        self.settings.signals = signals;
        self
    }

    /// Whether producers of this app send a `task-sent` event for each task (default on; Celery's
    /// `task_send_sent_event`, off there). Workers send the other task events unless started with
    /// `--without-events`.
    pub fn send_sent_events(mut self, send: bool) -> Self {
        self.settings.send_sent_events = send;
        self
    }

    /// Traces tasks with `telemetry` (see [`crate::telemetry`]) instead of what the `OTEL_*`
    /// environment says ([`Telemetry::from_env`](crate::telemetry::Telemetry::from_env), which
    /// [`AppBuilder::build`] calls otherwise); [`Telemetry::disabled`](crate::telemetry::Telemetry::disabled)
    /// switches tracing off whatever the environment says.
    pub fn telemetry(mut self, telemetry: crate::telemetry::Telemetry) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    /// Adds a periodic entry, sent by the workers started with `--beat` (one at a time).
    pub fn beat(mut self, entry: Entry) -> Self {
        self.beat.push(entry);
        self
    }

    /// Builds the app.
    ///
    /// # Errors
    /// The first invalid setting, or a task name registered twice.
    pub fn build(mut self) -> Result<App, ConfigError> {
        if !self.errors.is_empty() {
            return Err(self.errors.remove(0));
        }
        let mut task_queues = HashMap::new();
        for task in &self.tasks {
            if let Some(queue) = task
                .options
                .queue_name()
                .and_then(|queue| QueueName::new(queue).ok())
            {
                task_queues.insert(task.name.to_string(), queue);
            }
        }
        if let Some(declared) = &self.declared_queues {
            let listed = declared
                .iter()
                .map(QueueName::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            let mut used: Vec<(String, &QueueName)> = self
                .rules
                .iter()
                .map(|rule| (format!("route {:?}", rule.pattern()), rule.queue()))
                .collect();
            used.extend(
                task_queues
                    .iter()
                    .map(|(name, queue)| (format!("task {name}"), queue)),
            );
            used.push(("the default queue".to_owned(), &self.settings.default_queue));
            if let Some((what, queue)) = used
                .into_iter()
                .find(|(_, queue)| !declared.contains(queue))
            {
                return Err(ConfigError::UnknownQueue {
                    what,
                    queue: queue.to_string(),
                    declared: listed,
                });
            }
        }
        self.settings.routes = Routes::new(
            self.routers,
            self.rules,
            task_queues,
            self.settings.default_queue.clone(),
        )
        .with_steps(self.settings.priority_steps.clone());
        let mut tasks = HashMap::new();
        for task in self.tasks {
            let name = task.name.clone();
            if tasks.insert(name.clone(), task).is_some() {
                return Err(ConfigError::DuplicateTask(name.to_string()));
            }
        }
        check_unique(&self.beat)?;
        self.settings.telemetry = match self.telemetry {
            Some(telemetry) => telemetry,
            None => crate::telemetry::Telemetry::from_env().map_err(ConfigError::Telemetry)?,
        };
        Ok(App {
            inner: Arc::new(AppInner {
                tasks,
                settings: self.settings,
                beat: self.beat,
            }),
        })
    }
}
