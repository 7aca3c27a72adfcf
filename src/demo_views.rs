//! `ferry-demo views` (`make demo-views`): the scheduled incremental view sync on local components. Starts moto (the
//! state bucket and an S3 "lake") and PostgreSQL, serves a Flowfinity-style view from a small
//! local stand-in (Basic auth, `onbehalfof`, `previouslastsubmissionid`), and lets the local
//! scheduler sync it into PostgreSQL and S3 JSON Lines while new records arrive.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use bytes::Bytes;
use ferry_shared::config::Config;
use ferry_shared::layout::watermark_key;
use ferry_shared::services::Services;
use ferry_shared::state::StateStoreExt;
use ferry_shared::view_sync::lease::Watermark;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::ViewScheduler;

const USER: &str = "ferry-sync";
const ON_BEHALF_OF: &str = "ops@acme.example";

/// The stand-in view's records and the cursors it was asked for.
#[derive(Default)]
struct ViewData {
    records: Vec<serde_json::Value>,
    asked: Vec<String>,
}

/// A case record as a Flowfinity view returns it; field casing and the cursor's JSON type vary.
fn case(i: u64) -> serde_json::Value {
    let cursor = 700_000 + 3 * i;
    let id = format!("{:09}", 227_000 + i);
    if i.is_multiple_of(2) {
        serde_json::json!({"RecordID": id, "lastSubmissionId": cursor, "Client": format!("Client {i}"), "Status": "Open"})
    } else {
        serde_json::json!({"recordId": id, "LastSubmissionID": cursor.to_string(), "Client": format!("Client {i}"), "Status": "Closed"})
    }
}

fn cursor_of(r: &serde_json::Value) -> u64 {
    r.as_object()
        .and_then(|o| {
            o.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("lastSubmissionId"))
        })
        .and_then(|(_, v)| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
        .unwrap_or(0)
}

async fn serve_view(listener: TcpListener, data: Arc<Mutex<ViewData>>, auth: String) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (data, auth) = (data.clone(), auth.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (data, auth) = (data.clone(), auth.clone());
                async move {
                    let ok = req
                        .headers()
                        .get(hyper::header::AUTHORIZATION)
                        .is_some_and(|v| v.as_bytes() == auth.as_bytes());
                    if !ok || req.uri().path() != "/api/views/cases" {
                        return Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .status(401)
                                .body(Full::new(Bytes::new()))
                                .expect("static response"),
                        );
                    }
                    let query = req.uri().query().unwrap_or("");
                    let after: Option<u64> = url::form_urlencoded::parse(query.as_bytes())
                        .find(|(k, _)| k == "previouslastsubmissionid")
                        .and_then(|(_, v)| v.parse().ok());
                    let mut d = data.lock().expect("view data");
                    d.asked
                        .push(after.map_or_else(|| "(empty)".to_string(), |a| a.to_string()));
                    let body: Vec<&serde_json::Value> = d
                        .records
                        .iter()
                        .filter(|r| after.is_none_or(|a| cursor_of(r) > a))
                        .collect();
                    let body = serde_json::to_vec(&body).expect("records serialise");
                    Ok(hyper::Response::builder()
                        .header(hyper::header::CONTENT_TYPE, "application/json")
                        .body(Full::new(Bytes::from(body)))
                        .expect("static response"))
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Runs the demo; returns when both sinks hold every record (or fails with the reason).
pub async fn run() -> anyhow::Result<()> {
    println!("== ferry demo-views: scheduled incremental view sync on local components");
    ferry_harness::ensure_installed()?;
    let started = Instant::now();
    let moto = ferry_harness::Moto::start()?;
    let pg = ferry_harness::Postgres::start()?;
    println!(
        "   components up in {:.1}s: moto {}, PostgreSQL 127.0.0.1:{}",
        started.elapsed().as_secs_f64(),
        moto.endpoint,
        pg.port
    );
    moto.create_bucket("ferry-state").await?;
    moto.create_bucket("customer-lake").await?;

    let password = format!("demo-{:x}", crate::demo::rand_u64());
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"))
    );
    let data = Arc::new(Mutex::new(ViewData {
        records: (0..1200).map(case).collect(),
        asked: Vec::new(),
    }));
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let view_url = format!("http://{}/api/views/cases", listener.local_addr()?);
    let server = tokio::spawn(serve_view(listener, data.clone(), auth));
    println!("1. a stand-in view serves 1200 records at {view_url} (Basic auth)");

    let work = ferry_harness::repo_root().join(".local/demo-views");
    std::fs::create_dir_all(&work)?;
    let view_pw = crate::demo::write_secret(&work, "view-password", &password)?;
    let pg_pw = crate::demo::write_secret(&work, "pg-password", &pg.password)?;
    let view = |sink: &str| {
        serde_json::json!({"url": view_url, "on_behalf_of": ON_BEHALF_OF, "username": USER,
            "password": {"file": view_pw}, "sink": sink, "chunk_size": 250})
    };
    let config = serde_json::json!({
        "state": {"bucket": "ferry-state", "endpoint": {"endpoint_url": moto.endpoint, "force_path_style": true}},
        "views": {"cases-db": view("warehouse"), "cases-lake": view("lake")},
        "sinks": {
            "warehouse": {"type": "postgres", "host": "127.0.0.1", "port": pg.port, "user": pg.user,
                          "password": {"file": pg_pw}, "dbname": pg.dbname, "table": "flowfinity_cases"},
            "lake": {"type": "s3_jsonl", "bucket": "customer-lake", "prefix": "views/",
                     "endpoint": {"endpoint_url": moto.endpoint, "force_path_style": true}}
        }
    });
    let config_path = work.join("ferry.json");
    std::fs::write(&config_path, serde_json::to_string_pretty(&config)?)?;
    println!(
        "2. wrote config {}: views cases-db -> PostgreSQL, cases-lake -> S3 JSON Lines",
        config_path.display()
    );

    let services = Services::new(Config::from_json(&config.to_string())?).await;
    let sync = Arc::new(services.view_sync().await?);
    let scheduler = ViewScheduler::start(sync, Duration::from_secs(1));
    println!("3. the local scheduler syncs both views every second");
    let state = services.state.clone();
    let wait_for = async |cursor: u64| -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        for view in ["cases-db", "cases-lake"] {
            loop {
                let at = state
                    .get_json::<Watermark>(&watermark_key(view))
                    .await?
                    .map(|(w, _)| w.last_submission_id.to_string());
                if at.as_deref() == Some(&cursor.to_string()) {
                    println!("   {view}: watermark {cursor}");
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "{view} did not reach {cursor} within 60 s (at {at:?}); see the log lines above"
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    };
    wait_for(cursor_of(&case(1199))).await?;
    data.lock()
        .expect("view data")
        .records
        .extend((1200..1500).map(case));
    println!("4. 300 new records arrive in the view");
    wait_for(cursor_of(&case(1499))).await?;
    drop(scheduler);
    server.abort();

    let asked = data.lock().expect("view data").asked.clone();
    println!(
        "5. previouslastsubmissionid per request: {}",
        asked.join(", ")
    );
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user={} password={} dbname={}",
            pg.port, pg.user, pg.password, pg.dbname
        ),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT count(*), max(applied_count), min(record::text) FROM flowfinity_cases WHERE view_name = 'cases-db'",
            &[],
        )
        .await?;
    let (rows, max_applied, sample): (i64, i32, String) = (row.get(0), row.get(1), row.get(2));
    println!(
        "6. PostgreSQL flowfinity_cases: {rows} rows, each applied {max_applied} time(s); e.g. {sample}"
    );
    let s3 = ferry_shared::s3::client(&ferry_shared::config::S3Endpoint {
        region: None,
        endpoint_url: Some(moto.endpoint.clone()),
        force_path_style: true,
    })
    .await;
    let listed = s3
        .list_objects_v2()
        .bucket("customer-lake")
        .prefix("views/cases-lake/")
        .send()
        .await?;
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    println!(
        "7. S3 customer-lake: {} JSON Lines objects, one per chunk: {}",
        keys.len(),
        keys.join(", ")
    );
    println!(
        "== demo done in {:.1}s; components stopped",
        started.elapsed().as_secs_f64()
    );
    if rows != 1500 || max_applied != 1 {
        bail!("PostgreSQL should hold 1500 rows applied once each");
    }
    let lines = {
        let mut n = 0;
        for key in &keys {
            let body = s3
                .get_object()
                .bucket("customer-lake")
                .key(*key)
                .send()
                .await?
                .body
                .collect()
                .await
                .context("reading a lake object")?
                .into_bytes();
            n += body
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count();
        }
        n
    };
    if lines != 1500 {
        bail!("the lake should hold 1500 records, holds {lines}");
    }
    Ok(())
}
