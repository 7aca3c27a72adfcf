//! A PostgreSQL table, one row per (view, `RecordID`). Each chunk is one `INSERT .. ON CONFLICT DO
//! UPDATE .. WHERE stored.last_submission_id < EXCLUDED.last_submission_id` statement (atomic on
//! its own), so a record version is applied at most once and an older version never replaces a
//! newer one: the dedupe rule the source system recommends. `applied_count` counts the versions
//! applied to a row, which makes double application visible.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;
use tokio::sync::Mutex;

use super::{Chunk, Sink, SinkError, SinkReceipt};

/// Upserts chunks into one table over one (re)connected client.
pub struct PostgresSink {
    config: tokio_postgres::Config,
    table: String,
    location: String,
    client: Mutex<Option<tokio_postgres::Client>>,
}

impl PostgresSink {
    /// Builds the sink from its config (the table name is checked by its `validate`),
    /// resolving its password. Connects on first use.
    pub async fn from_config(
        config: &crate::config::PostgresConfig,
        secrets: &crate::secret::SecretResolver,
    ) -> Result<Self, crate::setup::SetupError> {
        let password = match &config.password {
            Some(r) => Some(secrets.resolve(r).await?),
            None => None,
        };
        Ok(Self::new(config, password))
    }

    /// A sink for the configured table with an already resolved password.
    pub fn new(config: &crate::config::PostgresConfig, password: Option<SecretString>) -> Self {
        let crate::config::PostgresConfig {
            host,
            port,
            user,
            dbname,
            table,
            ..
        } = config;
        let mut pg = tokio_postgres::Config::new();
        pg.host(host)
            .port(*port)
            .user(user)
            .dbname(dbname)
            .application_name("ferry-view-sync")
            .connect_timeout(Duration::from_secs(config.connect_timeout_secs))
            .keepalives_idle(Duration::from_secs(30));
        if let Some(p) = &password {
            pg.password(crate::secret::expose(p));
        }
        Self {
            config: pg,
            table: table.to_string(),
            location: format!("postgres://{host}:{port}/{dbname}/{table}"),
            client: Mutex::new(None),
        }
    }

    async fn connect(&self) -> Result<tokio_postgres::Client, SinkError> {
        let (client, connection) = self
            .config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| classify(&self.location, &e))?;
        let location = self.location.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(sink = %location, error = %describe(&e), "PostgreSQL connection closed");
            }
        });
        self.ensure_schema(&client).await?;
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {} (
                view_name text NOT NULL,
                record_id text NOT NULL,
                last_submission_id numeric NOT NULL,
                record jsonb NOT NULL,
                applied_count integer NOT NULL DEFAULT 1,
                synced_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (view_name, record_id)
            )",
            self.table
        );
        if let Err(e) = client.batch_execute(&create).await {
            // Two sessions creating the table at once: the loser sees a duplicate; the table is there.
            let duplicate = e.code().is_some_and(|c| {
                *c == tokio_postgres::error::SqlState::UNIQUE_VIOLATION
                    || *c == tokio_postgres::error::SqlState::DUPLICATE_TABLE
            });
            if !duplicate {
                return Err(classify(&self.location, &e));
            }
        }
        Ok(client)
    }

    /// The schema part of `schema.table`, if the table names one.
    fn schema(&self) -> Option<&str> {
        self.table.split_once('.').map(|(schema, _)| schema)
    }

    /// Creates the table's schema when it is missing. Looked up first: `CREATE SCHEMA IF NOT
    /// EXISTS` needs the CREATE privilege on the database even when the schema exists. A user
    /// who may not create it gets an error that says what to run instead.
    async fn ensure_schema(&self, client: &tokio_postgres::Client) -> Result<(), SinkError> {
        let Some(schema) = self.schema() else {
            return Ok(());
        };
        let exists = client
            .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
            .await
            .map_err(|e| classify(&self.location, &e))?
            .is_some();
        if exists {
            return Ok(());
        }
        // The name passed `valid_sql_table` (lowercase letters, digits, `_`): safe unquoted.
        match client
            .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .await
        {
            Ok(()) => {
                tracing::info!(sink = %self.location, schema, "created the missing schema");
                Ok(())
            }
            // Another session created it at the same moment.
            Err(e)
                if e.code().is_some_and(|c| {
                    *c == tokio_postgres::error::SqlState::UNIQUE_VIOLATION
                        || *c == tokio_postgres::error::SqlState::DUPLICATE_SCHEMA
                }) =>
            {
                Ok(())
            }
            Err(e)
                if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) =>
            {
                Err(SinkError::Rejected(format!(
                    "{}: schema {schema:?} does not exist and this user may not create it ({}); create it as the database owner: CREATE SCHEMA {schema} AUTHORIZATION <the sink's user>",
                    self.location,
                    describe(&e)
                )))
            }
            Err(e) => Err(classify(&self.location, &e)),
        }
    }

    /// `ferry check`: connects and logs in (nothing is created or written). A missing schema
    /// is fine when this user may create it (the first delivery does); otherwise it is a problem.
    pub async fn probe(&self) -> crate::probe::ProbeResult {
        use crate::probe::Problem;
        let (client, connection) = self
            .config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| {
                let user = self.config.get_user().unwrap_or("");
                match classify(&self.location, &e) {
                    SinkError::Unauthorized(m) => Problem::new(
                        format!("PostgreSQL refused the login of user {user:?}: {m}"),
                        "check user, password secret and dbname, and that pg_hba.conf lets this user in from this machine",
                    ),
                    SinkError::Transient { reason, .. } => Problem::new(
                        format!("cannot connect to PostgreSQL: {reason}"),
                        "check host and port, that the server is running and accepts TCP connections (listen_addresses), and firewalls",
                    ),
                    other => Problem::new(
                        format!("PostgreSQL refused the connection: {other}"),
                        "check dbname and the user's rights",
                    ),
                }
            })?;
        let task = tokio::spawn(connection);
        let result = async {
            let Some(schema) = self.schema() else {
                return Ok(());
            };
            let row = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1), \
                     has_database_privilege(current_database(), 'CREATE')",
                    &[&schema],
                )
                .await
                .map_err(|e| Problem::new(format!("{}: {}", self.location, describe(&e)), "check the user's rights"))?;
            let (exists, may_create): (bool, bool) = (row.get(0), row.get(1));
            if exists || may_create {
                Ok(())
            } else {
                Err(Problem::new(
                    format!("schema {schema:?} does not exist and user {:?} may not create it", self.config.get_user().unwrap_or("")),
                    format!("create it as the database owner: CREATE SCHEMA {schema} AUTHORIZATION <the sink's user>"),
                ))
            }
        }
        .await;
        drop(client);
        task.abort();
        result
    }

    /// Where rows go: `postgres://host:port/db/table`.
    pub fn location(&self) -> &str {
        &self.location
    }
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(inner) => format!("{e}: {inner}"),
            None => e.to_string(),
        },
    }
}

fn classify(location: &str, e: &tokio_postgres::Error) -> SinkError {
    let text = format!("{location}: {}", describe(e));
    let Some(code) = e.code() else {
        // No SQL state: I/O, a closed connection, a timeout.
        return SinkError::transient(text);
    };
    let class = &code.code()[..2];
    match class {
        "28" => SinkError::Unauthorized(text),
        // Connection exception, serialization failure/deadlock, insufficient resources,
        // operator intervention (shutdown), system error.
        "08" | "40" | "53" | "57" | "58" => SinkError::transient(text),
        _ => SinkError::Rejected(text),
    }
}

#[async_trait]
impl Sink for PostgresSink {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn deliver(&self, view: &str, chunk: &Chunk) -> Result<SinkReceipt, SinkError> {
        // One statement cannot touch a row twice: keep each record's last (highest) version.
        let mut latest: HashMap<&str, usize> = HashMap::new();
        for (i, r) in chunk.records.iter().enumerate() {
            latest.insert(&r.record_id, i);
        }
        let mut picked: Vec<usize> = latest.into_values().collect();
        picked.sort_unstable();
        let mut ids = Vec::with_capacity(picked.len());
        let mut cursors = Vec::with_capacity(picked.len());
        let mut bodies = Vec::with_capacity(picked.len());
        for i in picked {
            let r = &chunk.records[i];
            ids.push(r.record_id.clone());
            cursors.push(r.cursor.to_string());
            bodies.push(
                serde_json::to_string(&r.body)
                    .map_err(|e| SinkError::Rejected(format!("record {}: {e}", r.record_id)))?,
            );
        }
        let statement = format!(
            "INSERT INTO {t} AS t (view_name, record_id, last_submission_id, record)
             SELECT $1, u.record_id, u.lsid::numeric, u.record::jsonb
             FROM unnest($2::text[], $3::text[], $4::text[]) AS u(record_id, lsid, record)
             ON CONFLICT (view_name, record_id) DO UPDATE
             SET last_submission_id = EXCLUDED.last_submission_id, record = EXCLUDED.record,
                 applied_count = t.applied_count + 1, synced_at = now()
             WHERE t.last_submission_id < EXCLUDED.last_submission_id",
            t = self.table
        );
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            *guard = Some(self.connect().await?);
        }
        let client = guard.as_ref().expect("connected above");
        let applied = match client
            .execute(&statement, &[&view, &ids, &cursors, &bodies])
            .await
        {
            Ok(n) => n as usize,
            Err(e) => {
                let err = classify(&self.location, &e);
                if client.is_closed() || matches!(err, SinkError::Transient { .. }) {
                    *guard = None;
                }
                return Err(err);
            }
        };
        Ok(SinkReceipt {
            location: self.location.clone(),
            records: chunk.records.len(),
            applied,
        })
    }
}
