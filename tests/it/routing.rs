//! Routing across worker processes: each task lands on the queue its routes choose.

use std::time::Duration;

use celerity::routing::Route;
use celerity::{ApplyOptions, ConfigError, NatsConfig};
use celerity_it::{add, extract, transform};

use crate::support::{WorkerProcess, server};

const WAIT: Duration = Duration::from_secs(30);

fn routed_app() -> celerity::App {
    celerity::App::builder()
        .queues(["high", "default", "low"])
        .task(add)
        .task(extract)
        .task(transform)
        // Content-based: large additions are urgent.
        .router(|name, args, _kwargs| {
            let big = args
                .first()
                .and_then(serde_json::Value::as_i64)
                .is_some_and(|x| x > 1000);
            (name == "it.add" && big).then(|| Route::to("high").priority(9))
        })
        .route("etl.*", "low")
        .build()
        .expect("the routed app builds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_and_canvas_steps_land_on_the_queues_their_routes_choose() {
    let server = server();
    let url = server.url();
    let _high = WorkerProcess::start(&url, "w-high", &["-Q", "high"]);
    let _low = WorkerProcess::start(&url, "w-low", &["-Q", "low"]);
    let _default = WorkerProcess::start(&url, "w-default", &["-Q", "default"]);
    let client = routed_app().client(&NatsConfig::new(&url)).await.unwrap();
    let worker_of = |record: Option<celerity::ResultRecord>| {
        record.and_then(|record| record.worker).unwrap_or_default()
    };

    let urgent = add.delay(&client, 5000, 1).await.unwrap();
    assert_eq!(urgent.get(WAIT).await.unwrap(), 5001);
    assert_eq!(
        worker_of(urgent.record().await.unwrap()),
        "w-high",
        "router function"
    );

    let small = add.delay(&client, 1, 2).await.unwrap();
    assert_eq!(small.get(WAIT).await.unwrap(), 3);
    assert_eq!(
        worker_of(small.record().await.unwrap()),
        "w-default",
        "the default queue"
    );

    let etl = extract.delay(&client, 2).await.unwrap();
    etl.get(WAIT).await.unwrap();
    assert_eq!(
        worker_of(etl.record().await.unwrap()),
        "w-low",
        "glob route"
    );

    let forced = extract
        .apply_async(&client, (2,), ApplyOptions::new().queue("default"))
        .await
        .unwrap();
    forced.get(WAIT).await.unwrap();
    assert_eq!(
        worker_of(forced.record().await.unwrap()),
        "w-default",
        "the call-time queue wins"
    );

    let chain = celerity::chain![extract.s((1,)), transform.s(())]
        .apply_async(&client)
        .await
        .unwrap();
    assert_eq!(chain.get(WAIT).await.unwrap(), 111);
    assert_eq!(
        worker_of(chain.record().await.unwrap()),
        "w-low",
        "canvas steps are routed too"
    );
    assert_eq!(
        worker_of(chain.parent().unwrap().record().await.unwrap()),
        "w-low"
    );
}

#[test]
fn routes_to_undeclared_queues_are_refused_when_building_the_app() {
    let error = celerity::App::builder()
        .queues(["high", "default"])
        .route("tasks.*", "hgih")
        .build()
        .unwrap_err();
    match error {
        ConfigError::UnknownQueue { ref queue, .. } => assert_eq!(queue, "hgih", "{error}"),
        other => panic!("expected an unknown-queue error, got {other}"),
    }
    let error = celerity::App::builder()
        .route_with_priority("tasks.*", "low", 12)
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("12"), "{error}");
}
