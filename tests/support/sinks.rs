//! The three sinks on their real servers (PostgreSQL from the harness, S3 on moto, the HTTP
//! receiver stand-in), built through the config like production, and a probe per sink that reads
//! back what it holds by the side door.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferry_shared::sink::Sink;

use super::view::{Receiver, identity};

/// The secret the HTTP receiver expects in `Authorization`.
pub(crate) const RECEIVER_AUTH: &str = "Bearer receiver-secret-7f3a9c";

/// What a sink holds for one view.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Held {
    /// RecordID -> (cursor, body) of the latest version held.
    pub latest: BTreeMap<String, (u64, serde_json::Value)>,
    /// RecordID -> how many versions of it were applied (Postgres `applied_count`, distinct
    /// Idempotency-Keys applied by the receiver, lines across S3 objects).
    pub applications: BTreeMap<String, u32>,
}

/// A sink under test and its side door.
pub(crate) struct SinkUnderTest {
    pub kind: &'static str,
    pub sink: Arc<dyn Sink>,
    /// The sink's config section (for config-driven tests).
    pub config: serde_json::Value,
    pub probe: Probe,
}

pub(crate) enum Probe {
    Postgres {
        client: tokio_postgres::Client,
        table: String,
    },
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
        prefix: String,
    },
    Http(Receiver),
}

impl Probe {
    pub(crate) async fn held(&self, view: &str) -> Held {
        let mut held = Held::default();
        match self {
            Probe::Postgres { client, table } => {
                let rows = client
                    .query(
                        &format!("SELECT record_id, last_submission_id::text, record::text, applied_count FROM {table} WHERE view_name = $1"),
                        &[&view],
                    )
                    .await
                    .unwrap();
                for row in rows {
                    let id: String = row.get(0);
                    let cursor: String = row.get(1);
                    let body: String = row.get(2);
                    let applied: i32 = row.get(3);
                    held.latest.insert(
                        id.clone(),
                        (
                            cursor.parse().unwrap(),
                            serde_json::from_str(&body).unwrap(),
                        ),
                    );
                    held.applications.insert(id, applied as u32);
                }
            }
            Probe::S3 {
                client,
                bucket,
                prefix,
            } => {
                for key in s3_keys(client, bucket, &format!("{prefix}{view}/")).await {
                    let body = client
                        .get_object()
                        .bucket(bucket)
                        .key(&key)
                        .send()
                        .await
                        .unwrap()
                        .body
                        .collect()
                        .await
                        .unwrap()
                        .into_bytes();
                    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                        let record: serde_json::Value = serde_json::from_slice(line).unwrap();
                        let (id, cursor) = identity(&record);
                        *held.applications.entry(id.clone()).or_insert(0) += 1;
                        if held.latest.get(&id).is_none_or(|(c, _)| *c < cursor) {
                            held.latest.insert(id, (cursor, record));
                        }
                    }
                }
            }
            Probe::Http(receiver) => {
                held.latest = receiver.latest(view);
                for key in receiver.keys(view).keys() {
                    let id = key.rsplit_once(':').unwrap().0.to_string();
                    *held.applications.entry(id).or_insert(0) += 1;
                }
            }
        }
        held
    }
}

/// Keys under `prefix`, sorted.
pub(crate) async fn s3_keys(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Vec<String> {
    let out = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .unwrap();
    let mut keys: Vec<String> = out
        .contents()
        .iter()
        .map(|o| o.key().unwrap().to_string())
        .collect();
    keys.sort();
    keys
}

/// What the view holds, in the shape of `Held::latest`.
pub(crate) fn expected(
    records: &[serde_json::Value],
) -> BTreeMap<String, (u64, serde_json::Value)> {
    records
        .iter()
        .map(|r| {
            let (id, cursor) = identity(r);
            (id, (cursor, r.clone()))
        })
        .collect()
}

async fn build(kind: &'static str, config: serde_json::Value, probe: Probe) -> SinkUnderTest {
    let moto = &ferry_harness::shared().moto;
    let full = serde_json::json!({
        "state": {"bucket": "unused", "endpoint": {"endpoint_url": moto.endpoint, "force_path_style": true}},
        "sinks": {"s": config},
        "transfer": {"retries": 2, "initial_backoff_ms": 5, "max_backoff_ms": 50},
    });
    let services = super::services(&full).await;
    let sink = services.sink("s").await.expect("sink builds");
    SinkUnderTest {
        kind,
        sink,
        config,
        probe,
    }
}

/// A PostgreSQL client for the harness server (for assertions and setup).
pub(crate) async fn pg_client() -> tokio_postgres::Client {
    let pg = ferry_harness::postgres_shared();
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user={} password={} dbname={}",
            pg.port, pg.user, pg.password, pg.dbname
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    client
}

/// The PostgreSQL sink config for `table` on the harness server.
pub(crate) fn postgres_config(table: &str) -> serde_json::Value {
    let pg = ferry_harness::postgres_shared();
    serde_json::json!({"type": "postgres", "host": "127.0.0.1", "port": pg.port, "user": pg.user,
        "password": super::file_secret(&pg.password), "dbname": pg.dbname, "table": table})
}

pub(crate) async fn postgres() -> SinkUnderTest {
    let table = super::unique("rows").replace('-', "_");
    build(
        "postgres",
        postgres_config(&table),
        Probe::Postgres {
            client: pg_client().await,
            table,
        },
    )
    .await
}

pub(crate) async fn s3() -> SinkUnderTest {
    let moto = &ferry_harness::shared().moto;
    let bucket = super::unique("lake");
    moto.create_bucket(&bucket).await.unwrap();
    build(
        "s3_jsonl",
        serde_json::json!({"type": "s3_jsonl", "bucket": bucket, "prefix": "views/",
            "endpoint": {"endpoint_url": moto.endpoint, "force_path_style": true}}),
        Probe::S3 {
            client: super::moto_s3().await,
            bucket,
            prefix: "views/".into(),
        },
    )
    .await
}

pub(crate) async fn http() -> SinkUnderTest {
    let receiver = Receiver::start(RECEIVER_AUTH).await;
    build(
        "http",
        serde_json::json!({"type": "http", "url": receiver.url(), "concurrency": 4,
            "secret_headers": {"Authorization": super::file_secret(RECEIVER_AUTH)}}),
        Probe::Http(receiver),
    )
    .await
}

/// One of each.
pub(crate) async fn all() -> Vec<SinkUnderTest> {
    vec![postgres().await, s3().await, http().await]
}
