//! The PostgreSQL sink: each output record's value is a JSON object whose
//! fields are columns of the table. A checkpoint's rows and the sink's
//! progress row (`weir_progress`: job, deployment, position) are written in
//! one transaction, so a checkpoint published twice (by a new leader, or a
//! late old one) lands once: the second finds the progress row past it.
//! Positions are bytes of the staged output, which holds one JSON value per
//! line; a progress row part-way into a publish skips the lines before it.

use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use super::SinkOwner;
use crate::spec::TableMode;

/// How long connecting may take before the attempt counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait between two tries while the database is unreachable.
const MAX_RETRY: Duration = Duration::from_secs(5);

const PROGRESS_TABLE: &str = "CREATE TABLE IF NOT EXISTS weir_progress (
    job text NOT NULL,
    deployment text NOT NULL,
    position bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job, deployment))";

/// Why a write to the table failed.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// The server cannot be reached, or went away: trying again may work.
    #[error("PostgreSQL at {at} is unreachable: {source}")]
    Unreachable {
        /// host:port/db, without credentials.
        at: String,
        /// What the client said.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The server refused what was sent (credentials, a missing table, a
    /// value of the wrong type): trying again will not help.
    #[error("PostgreSQL at {at} refused {what}: {detail}")]
    Refused {
        /// host:port/db, without credentials.
        at: String,
        /// What was being done.
        what: String,
        /// The server's message.
        detail: String,
    },
    /// The records do not fit the table, or the progress row does not fit
    /// this job's output.
    #[error("{0}")]
    Mismatch(String),
}

impl PostgresError {
    fn from_client(at: &str, what: &str, e: tokio_postgres::Error) -> PostgresError {
        // A server error with an SQLSTATE is an answer, except those that
        // say the connection or the server is going away.
        // No SQLSTATE: the connection failed (an I/O error, or closed), or
        // the URL or its options are wrong, which trying again won't fix.
        let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
        let transient = match e.code() {
            None => io || e.is_closed(),
            Some(code) => {
                code.code().starts_with("08")
                    || [
                        SqlState::ADMIN_SHUTDOWN,
                        SqlState::CRASH_SHUTDOWN,
                        SqlState::CANNOT_CONNECT_NOW,
                    ]
                    .contains(code)
            }
        };
        if transient {
            return PostgresError::Unreachable {
                at: at.to_string(),
                source: e,
            };
        }
        let detail = e
            .as_db_error()
            .map_or_else(|| e.to_string(), |db| db.message().to_string());
        PostgresError::Refused {
            at: at.to_string(),
            what: what.to_string(),
            detail,
        }
    }

    /// Whether trying again may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, PostgresError::Unreachable { .. })
    }
}

/// A table a job writes, with the columns it has.
pub struct Table {
    url: String,
    at: String,
    name: String,
    mode: TableMode,
    owner: SinkOwner,
    client: Option<Client>,
    /// The table's columns as last read: they outlive a lost connection.
    shape: Option<TableShape>,
}

impl Table {
    /// The table `name` at `url`, for `owner`; nothing is connected yet.
    pub fn new(url: &str, name: &str, mode: &TableMode, owner: SinkOwner) -> Table {
        Table {
            url: url.to_string(),
            at: where_of(url),
            name: name.to_string(),
            mode: mode.clone(),
            owner,
            client: None,
            shape: None,
        }
    }

    /// What the table takes, once the sink has connected: after
    /// [`Table::position`] or [`Table::connect`].
    pub fn shape(&self) -> Option<TableShape> {
        self.shape.clone()
    }

    /// Connects and reads the table's columns, even with nothing to write,
    /// waiting out a database that does not answer as a publish does.
    pub async fn connect(&mut self) -> Result<(), PostgresError> {
        self.retrying(None).await
    }

    /// The position of this owner's progress row: 0 when it has none.
    pub async fn position(&mut self) -> Result<u64, PostgresError> {
        let (at, job, deployment) = (self.at.clone(), self.owner.job.clone(), self.owner.deployment.clone());
        let (client, _) = self.connected().await?;
        let row = client
            .query_opt(
                "SELECT position FROM weir_progress WHERE job = $1 AND deployment = $2",
                &[&job, &deployment],
            )
            .await
            .map_err(|e| PostgresError::from_client(&at, "reading weir_progress", e));
        let row = self.forget_on_error(row)?;
        Ok(row.map_or(0, |r| r.get::<_, i64>(0) as u64))
    }

    /// Writes the rows of `output` (one JSON object per line) that come at
    /// or after the progress row, and moves the row to `at + output.len()`,
    /// in one transaction. Trying again while the database is unreachable,
    /// with a warning each time, until it answers (the caller's stop drops
    /// this).
    pub async fn publish(&mut self, at: u64, output: &[u8]) -> Result<(), PostgresError> {
        self.retrying(Some((at, output))).await
    }

    /// Writes `write` (or only connects), trying again while the database
    /// is unreachable.
    async fn retrying(&mut self, write: Option<(u64, &[u8])>) -> Result<(), PostgresError> {
        let mut wait = Duration::from_millis(100);
        loop {
            let tried = match write {
                Some((at, output)) => self.publish_once(at, output).await,
                None => {
                    let connected = self.connected().await.map(drop);
                    self.forget_on_error(connected)
                }
            };
            match tried {
                Err(e) if e.is_transient() => {
                    tracing::warn!(
                        job = %self.owner.job,
                        table = %self.name,
                        "checkpoint output waits for PostgreSQL, trying again in {wait:?}: {e}"
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_RETRY);
                }
                other => return other,
            }
        }
    }

    async fn publish_once(&mut self, at: u64, output: &[u8]) -> Result<(), PostgresError> {
        if output.is_empty() {
            // A checkpoint with no output has nothing to write (FLINK-31363).
            return Ok(());
        }
        let (job, deployment) = (self.owner.job.clone(), self.owner.deployment.clone());
        let (name, at_db) = (self.name.clone(), self.at.clone());
        let (client, shape) = self.connected().await?;
        let refused = |what: &str| {
            let at_db = at_db.clone();
            let what = what.to_string();
            move |e| PostgresError::from_client(&at_db, &what, e)
        };
        let result = async {
            let tx = client.transaction().await.map_err(refused("BEGIN"))?;
            tx.execute(
                "INSERT INTO weir_progress (job, deployment, position) VALUES ($1, $2, 0) ON CONFLICT DO NOTHING",
                &[&job, &deployment],
            )
            .await
            .map_err(refused("writing weir_progress"))?;
            let position: i64 = tx
                .query_one(
                    "SELECT position FROM weir_progress WHERE job = $1 AND deployment = $2 FOR UPDATE",
                    &[&job, &deployment],
                )
                .await
                .map_err(refused("reading weir_progress"))?
                .get(0);
            let end = at + output.len() as u64;
            let Some(rows) = unwritten(output, at, position as u64, &name)? else {
                return Ok(());
            };
            let (sql, json) = insert(shape, rows)?;
            tx.execute(sql.as_str(), &[&json])
                .await
                .map_err(refused(&format!("the rows for table {name}")))?;
            tx.execute(
                "UPDATE weir_progress SET position = $3, updated_at = now() WHERE job = $1 AND deployment = $2",
                &[&job, &deployment, &(end as i64)],
            )
            .await
            .map_err(refused("writing weir_progress"))?;
            tx.commit().await.map_err(refused("COMMIT"))
        }
        .await;
        self.forget_on_error(result)
    }

    /// Drops a connection that failed, so the next try makes a new one.
    fn forget_on_error<T>(&mut self, result: Result<T, PostgresError>) -> Result<T, PostgresError> {
        if result.as_ref().is_err_and(PostgresError::is_transient) {
            self.client = None;
        }
        result
    }

    /// The connection, made (with the progress table and the table's
    /// columns read) if there is none.
    async fn connected(&mut self) -> Result<(&mut Client, &TableShape), PostgresError> {
        if self.client.is_none() {
            let client = connect(&self.url, &self.at).await?;
            let at = &self.at;
            if let Err(e) = client.batch_execute(PROGRESS_TABLE).await {
                // Two supervisors creating it at once: one wins, and that is enough.
                if e.code() != Some(&SqlState::UNIQUE_VIOLATION) {
                    return Err(PostgresError::from_client(at, "creating weir_progress", e));
                }
            }
            let columns = columns(&client, at, &self.name).await?;
            check_key(&client, at, &self.name, &self.mode, &columns).await?;
            self.client = Some(client);
            self.shape = Some(TableShape {
                table: self.name.clone(),
                mode: self.mode.clone(),
                columns,
            });
        }
        let client = self.client.as_mut().expect("just connected");
        Ok((client, self.shape.as_ref().expect("read on connecting")))
    }
}

/// Checks, at deploy, that the table exists and fits the mode. `Ok(false)`
/// when the database cannot be reached now (the job will wait for it).
pub async fn check(url: &str, table: &str, mode: &TableMode) -> Result<bool, PostgresError> {
    let at = where_of(url);
    let client = match connect(url, &at).await {
        Ok(client) => client,
        Err(e) if e.is_transient() => return Ok(false),
        Err(e) => return Err(e),
    };
    let columns = columns(&client, &at, table).await?;
    check_key(&client, &at, table, mode, &columns).await?;
    Ok(true)
}

async fn connect(url: &str, at: &str) -> Result<Client, PostgresError> {
    let connecting = tokio_postgres::connect(url, NoTls);
    let (client, connection) = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(connected) => connected.map_err(|e| PostgresError::from_client(at, "the connection", e))?,
        Err(_) => {
            return Err(PostgresError::Mismatch(format!(
                "PostgreSQL at {at} did not answer within {CONNECT_TIMEOUT:?}"
            )))
        }
    };
    // The connection does the socket I/O; it ends when the client is dropped.
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("PostgreSQL connection ended: {e}");
        }
    });
    Ok(client)
}

/// The columns of `table`, in order; a table that does not exist is an error.
async fn columns(client: &Client, at: &str, table: &str) -> Result<Vec<String>, PostgresError> {
    let (schema, name) = split_table(table);
    let rows = client
        .query(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = coalesce($1, current_schema()) AND table_name = $2 ORDER BY ordinal_position",
            &[&schema, &name],
        )
        .await
        .map_err(|e| PostgresError::from_client(at, "reading the table's columns", e))?;
    if rows.is_empty() {
        return Err(PostgresError::Mismatch(format!(
            "table {table} does not exist in PostgreSQL at {at}; create it first"
        )));
    }
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// For an upsert: the key columns exist and a unique index covers exactly them.
async fn check_key(
    client: &Client,
    at: &str,
    table: &str,
    mode: &TableMode,
    columns: &[String],
) -> Result<(), PostgresError> {
    let TableMode::Upsert { key } = mode else {
        return Ok(());
    };
    if let Some(missing) = key.iter().find(|k| !columns.contains(k)) {
        return Err(PostgresError::Mismatch(format!(
            "key column {missing} is not a column of table {table} (its columns: {})",
            columns.join(", ")
        )));
    }
    let indexes = client
        .query(
            "SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_index i
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
             WHERE i.indrelid = $1::text::regclass AND i.indisunique GROUP BY i.indexrelid",
            &[&table],
        )
        .await
        .map_err(|e| PostgresError::from_client(at, "reading the table's indexes", e))?;
    let mut wanted = key.clone();
    wanted.sort();
    if !indexes.iter().any(|r| r.get::<_, Vec<String>>(0) == wanted) {
        return Err(PostgresError::Mismatch(format!(
            "table {table} has no unique index on ({}), which mode=upsert needs; \
             add one (`CREATE UNIQUE INDEX ON {table} ({})`) or use mode=append",
            key.join(", "),
            key.join(", ")
        )));
    }
    Ok(())
}

/// The lines of `output` (published at `at`) not yet in the table, whose
/// progress row is at `position`; `None` when all are.
fn unwritten<'a>(output: &'a [u8], at: u64, position: u64, table: &str) -> Result<Option<&'a [u8]>, PostgresError> {
    if position >= at + output.len() as u64 {
        return Ok(None);
    }
    if position < at {
        return Err(PostgresError::Mismatch(format!(
            "table {table}'s progress row is at byte {position} of the job's output but this checkpoint's starts at \
             {at}: rows are missing (was its weir_progress row changed by hand?); cancel the job and deploy it again"
        )));
    }
    let done = (position - at) as usize;
    if done > 0 && output[done - 1] != b'\n' {
        return Err(PostgresError::Mismatch(format!(
            "table {table}'s progress row is at byte {position}, inside a record of the job's output: \
             another job or deployment wrote it"
        )));
    }
    Ok(Some(&output[done..]))
}

/// What a table takes: the columns a record's fields may name, and for
/// an upsert the key fields every record needs. The runner holds each
/// output row up to it as the job emits it, so a row that cannot fit is
/// refused by the job's `--on-error` (dead-lettered, say) before it is in
/// a checkpoint, not found at publish, where it would fail every retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableShape {
    table: String,
    mode: TableMode,
    columns: Vec<String>,
}

impl TableShape {
    /// The row a record's value makes: a JSON object whose fields are
    /// columns, with the key fields of an upsert; or why it makes none.
    pub fn row(&self, value: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, String> {
        let table = &self.table;
        let row: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(value).map_err(|e| {
            format!(
                "a record for table {table} is not a JSON object ({e}): {}",
                String::from_utf8_lossy(value)
            )
        })?;
        if row.is_empty() {
            return Err(format!(
                "a record for table {table} is an empty JSON object: it names no column"
            ));
        }
        if let Some(field) = row.keys().find(|f| !self.columns.contains(f)) {
            return Err(format!(
                "a record's field `{field}` is not a column of table {table} (its columns: {})",
                self.columns.join(", ")
            ));
        }
        if let TableMode::Upsert { key } = &self.mode {
            if let Some(missing) = key.iter().find(|k| !row.contains_key(*k)) {
                return Err(format!(
                    "a record for table {table} has no key field `{missing}`: {}",
                    String::from_utf8_lossy(value)
                ));
            }
        }
        Ok(row)
    }

    /// Takes the rows that do not fit out of `staged[from..]` (one row per
    /// line, as the sink reads them).
    pub fn take_unfit(&self, staged: &mut Vec<u8>, from: usize) -> Vec<Unfit> {
        let mut unfit = Vec::new();
        // The rows that fit, gathered only once one does not.
        let mut kept: Option<Vec<u8>> = None;
        let mut start = from;
        for (index, line) in staged[from..].split_inclusive(|b| *b == b'\n').enumerate() {
            let row = line.strip_suffix(b"\n").unwrap_or(line);
            match self.row(row) {
                Ok(_) => {
                    if let Some(kept) = &mut kept {
                        kept.extend_from_slice(line);
                    }
                }
                Err(reason) => {
                    kept.get_or_insert_with(|| staged[from..start].to_vec());
                    unfit.push(Unfit {
                        index,
                        row: row.to_vec(),
                        reason,
                    });
                }
            }
            start += line.len();
        }
        if let Some(kept) = kept {
            staged.truncate(from);
            staged.extend_from_slice(&kept);
        }
        unfit
    }
}

/// An output row that does not fit its table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfit {
    /// Its place among the rows of its batch.
    pub index: usize,
    /// The row, as staged.
    pub row: Vec<u8>,
    /// Why it does not fit.
    pub reason: String,
}

/// The statement inserting `rows` (JSON objects, one per line), and the
/// rows as one JSON array, its parameter. Every row must fit the table.
fn insert(shape: &TableShape, rows: &[u8]) -> Result<(String, String), PostgresError> {
    let mut used: Vec<&str> = Vec::new();
    let mut json = String::from("[");
    for (i, line) in rows.split(|b| *b == b'\n').filter(|l| !l.is_empty()).enumerate() {
        let row = shape.row(line).map_err(PostgresError::Mismatch)?;
        for field in row.keys() {
            let column = shape
                .columns
                .iter()
                .find(|c| *c == field)
                .expect("a row's fields are columns");
            if !used.contains(&column.as_str()) {
                used.push(column);
            }
        }
        if i > 0 {
            json.push(',');
        }
        json.push_str(std::str::from_utf8(line).expect("parsed as JSON, so UTF-8"));
    }
    json.push(']');
    let list = |cols: &[&str], prefix: &str| cols.iter().map(|c| format!("{prefix}{}", quote(c))).collect::<Vec<_>>();
    let target = quote_table(&shape.table);
    let source = format!("json_populate_recordset(NULL::{target}, $1::text::json) WITH ORDINALITY AS r");
    let sql = match &shape.mode {
        TableMode::Append => format!(
            "INSERT INTO {target} ({}) SELECT {} FROM {source} ORDER BY r.ordinality",
            list(&used, "").join(", "),
            list(&used, "r.").join(", ")
        ),
        TableMode::Upsert { key } => {
            let key: Vec<&str> = key.iter().map(String::as_str).collect();
            let updates: Vec<String> = used
                .iter()
                .filter(|c| !key.contains(c))
                .map(|c| format!("{0} = EXCLUDED.{0}", quote(c)))
                .collect();
            let action = match updates.is_empty() {
                true => "DO NOTHING".to_string(),
                false => format!("DO UPDATE SET {}", updates.join(", ")),
            };
            // The last record of a key wins: one row per key, or PostgreSQL
            // refuses to update a row twice in one statement.
            format!(
                "INSERT INTO {target} ({}) SELECT DISTINCT ON ({}) {} FROM {source} ORDER BY {}, r.ordinality DESC \
                 ON CONFLICT ({}) {action}",
                list(&used, "").join(", "),
                list(&key, "r.").join(", "),
                list(&used, "r.").join(", "),
                list(&key, "r.").join(", "),
                list(&key, "").join(", "),
            )
        }
    };
    Ok((sql, json))
}

/// An identifier, quoted.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `NAME` or `SCHEMA.NAME`, quoted.
fn quote_table(table: &str) -> String {
    table.split('.').map(quote).collect::<Vec<_>>().join(".")
}

fn split_table(table: &str) -> (Option<&str>, &str) {
    match table.split_once('.') {
        Some((schema, name)) => (Some(schema), name),
        None => (None, table),
    }
}

/// `host:port/db` of a URL, for messages: never its credentials.
fn where_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('?').next().unwrap_or(rest).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_progress_row_skips_what_the_table_has() {
        let out = b"{\"a\":1}\n{\"a\":2}\n";
        assert_eq!(unwritten(out, 10, 10, "t").unwrap(), Some(&out[..]));
        assert_eq!(unwritten(out, 10, 18, "t").unwrap(), Some(&out[8..]));
        assert_eq!(unwritten(out, 10, 26, "t").unwrap(), None);
        assert_eq!(unwritten(out, 10, 40, "t").unwrap(), None);
        assert!(unwritten(out, 10, 5, "t")
            .unwrap_err()
            .to_string()
            .contains("rows are missing"));
        assert!(unwritten(out, 10, 12, "t")
            .unwrap_err()
            .to_string()
            .contains("inside a record"));
        assert_eq!(unwritten(b"", 7, 7, "t").unwrap(), None);
    }

    #[test]
    fn records_become_one_statement_and_fields_must_be_columns() {
        let shape = |table: &str, mode: TableMode| TableShape {
            table: table.into(),
            mode,
            columns: vec!["id".into(), "n".into(), "note".into()],
        };
        let rows = b"{\"id\":1,\"n\":2}\n{\"id\":1,\"note\":\"x\"}\n";
        let (sql, json) = insert(&shape("s.t", TableMode::Append), rows).unwrap();
        assert_eq!(json, "[{\"id\":1,\"n\":2},{\"id\":1,\"note\":\"x\"}]");
        assert!(
            sql.starts_with("INSERT INTO \"s\".\"t\" (\"id\", \"n\", \"note\") SELECT r.\"id\""),
            "{sql}"
        );
        let upsert = shape("t", TableMode::Upsert { key: vec!["id".into()] });
        let (sql, _) = insert(&upsert, rows).unwrap();
        assert!(
            sql.contains("DISTINCT ON (r.\"id\")")
                && sql.contains("ON CONFLICT (\"id\") DO UPDATE SET \"n\" = EXCLUDED.\"n\""),
            "{sql}"
        );
        let append = shape("t", TableMode::Append);
        let err = insert(&append, b"{\"id\":1,\"extra\":2}\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("field `extra` is not a column of table t (its columns: id, n, note)"),
            "{err}"
        );
        let err = insert(&upsert, b"{\"n\":2}\n").unwrap_err();
        assert!(err.to_string().contains("no key field `id`"), "{err}");
        let err = insert(&append, b"17\n").unwrap_err();
        assert!(err.to_string().contains("not a JSON object"), "{err}");

        let mut staged = b"{\"id\":0}\n{\"id\":1}\n{\"x\":2}\n17\n{\"n\":4}\n".to_vec();
        let unfit = append.take_unfit(&mut staged, 9);
        assert_eq!(
            staged, b"{\"id\":0}\n{\"id\":1}\n{\"n\":4}\n",
            "the rows that fit stay, in order"
        );
        let unfit: Vec<(usize, &[u8])> = unfit.iter().map(|u| (u.index, u.row.as_slice())).collect();
        assert_eq!(unfit, [(1, &b"{\"x\":2}"[..]), (2, &b"17"[..])]);
    }

    #[test]
    fn messages_name_the_server_never_the_password() {
        assert_eq!(
            where_of("postgresql://u:secret@db:5432/app?sslmode=disable"),
            "db:5432/app"
        );
        assert_eq!(where_of("postgres://h/d"), "h/d");
    }
}
