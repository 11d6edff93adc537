//! Cluster mode's shared state: the shared tables (channels, tokens,
//! events, the as-run log, rehearsal reports and schedules, ad breaks) live
//! in etcd, one key per row, and each node's SQLite file holds a copy.
//!
//! While a node leads, each batch of the coordinator's writes runs in one
//! SQLite transaction ([`super::Store::shared`]). Temporary triggers on
//! this connection log every row it changes in those tables (as JSON);
//! before the commit, the logged rows go to etcd in one transaction,
//! conditional on the node's election key. If etcd refuses (it is away, or
//! the node no longer holds the election) the SQLite transaction is rolled
//! back: a write is applied to both or to neither, and a deposed leader's
//! writes fail. When a node takes over, its copy is replaced by etcd's
//! ([`super::Store::take_over`]); the first leader of a new cluster seeds
//! etcd from its own file instead.
//!
//! Alerts and their deliveries, and the as-run pictures, stay with the
//! node that made them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp};
use rusqlite::Connection;
use rusqlite::types::{Value, ValueRef};

use super::StoreError;

/// Where the shared rows live: `/simulcast/state/TABLE/KEY`.
pub const STATE_PREFIX: &str = "/simulcast/state/";
/// Set once a leader seeded etcd from its file: later leaders import.
pub const SEEDED: &str = "/simulcast/state-seeded";
/// The tables shared through etcd, each with its key column.
pub const SHARED: [(&str, &str); 7] = [
    ("channels", "id"),
    ("tokens", "name"),
    ("events", "id"),
    ("asrun", "seq"),
    ("rehearsals", "id"),
    ("rehearsal_schedules", "id"),
    ("breaks", "id"),
];
/// The longest a commit waits for etcd.
const ETCD_WAIT: Duration = Duration::from_secs(2);
/// How long the look that ends a run of refusals may take.
const LOOK: Duration = Duration::from_millis(500);
/// How often, at most, the shared store looks whether etcd is back.
const LOOK_AGAIN: Duration = Duration::from_secs(1);
/// The start of a refusal for a request not sent (etcd failed just
/// before): its outcome is certain.
const NOT_SENT: &str = "not sent: etcd failed the request before this and has not answered since";
/// Operations per etcd transaction (etcd's default limit is 128).
const OPS_PER_TXN: usize = 100;

/// A row to write or remove in etcd.
#[derive(Debug, Clone)]
enum Change {
    Put(String, String),
    Delete(String),
}

/// What the mirror keeps between batches.
#[derive(Debug, Default)]
struct Shared {
    /// The election key writes are conditional on; `None`: this node
    /// follows and nothing is shared.
    fence: Option<Vec<u8>>,
    /// Each shared table's column names, in order.
    columns: HashMap<String, Vec<String>>,
    /// A write went to etcd and no answer came (a timeout, a broken
    /// connection): etcd may still apply it. The store is read again from
    /// etcd before the next write.
    uncertain: bool,
}

/// etcd's answer to a write conditional on an election key that is gone.
const FENCED: &str = "this node no longer holds the election: write refused (fenced)";

/// Whether etcd was seeded, and every shared row (key, JSON).
type Everything = (bool, Vec<(String, String)>);

/// A request to the etcd thread.
enum Job {
    /// Puts each row whose key etcd does not hold yet.
    Offer {
        rows: Vec<(String, String)>,
        reply: std::sync::mpsc::Sender<Result<usize, String>>,
    },
    Write {
        changes: Vec<Change>,
        fence: Option<Vec<u8>>,
        reply: std::sync::mpsc::Sender<Result<(), String>>,
    },
    ReadAll {
        reply: std::sync::mpsc::Sender<Result<Everything, String>>,
    },
}

/// The mirror of one store.
#[derive(Debug)]
pub struct Mirror {
    state: Arc<Mutex<Shared>>,
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
    endpoints: String,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Job::Offer { .. } => "Offer",
            Job::Write { .. } => "Write",
            Job::ReadAll { .. } => "ReadAll",
        })
    }
}

fn lock(h: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    h.lock().unwrap_or_else(|e| e.into_inner())
}

/// A column value as JSON (the shared tables hold no blobs).
fn json(v: ValueRef<'_>) -> serde_json::Value {
    match v {
        ValueRef::Null | ValueRef::Blob(_) => serde_json::Value::Null,
        ValueRef::Integer(i) => i.into(),
        ValueRef::Real(r) => r.into(),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
    }
}

/// A JSON value as a column value.
fn value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Integer(i64::from(*b)),
        serde_json::Value::Number(n) => {
            n.as_i64().map_or_else(|| Value::Real(n.as_f64().unwrap_or(0.0)), Value::Integer)
        }
        serde_json::Value::String(s) => Value::Text(s.clone()),
        other => Value::Text(other.to_string()),
    }
}

/// The etcd key of a row of `table` whose key column holds `key`.
fn row_key(table: &str, key: &serde_json::Value) -> String {
    match key {
        // The as-run log's sequence, padded: keys sort as the log does.
        serde_json::Value::Number(n) => format!("{STATE_PREFIX}{table}/{:020}", n.as_i64().unwrap_or(0)),
        serde_json::Value::String(s) => format!("{STATE_PREFIX}{table}/{s}"),
        other => format!("{STATE_PREFIX}{table}/{other}"),
    }
}

/// A row as JSON (column name to value), and its key; `get(i)` reads
/// column `i`.
fn row(
    table: &str,
    columns: &[String],
    get: impl Fn(usize) -> Option<serde_json::Value>,
) -> (String, serde_json::Map<String, serde_json::Value>) {
    let key_column = SHARED.iter().find(|(t, _)| *t == table).map_or("", |(_, k)| *k);
    let mut doc = serde_json::Map::new();
    for (i, name) in columns.iter().enumerate() {
        doc.insert(name.clone(), get(i).unwrap_or(serde_json::Value::Null));
    }
    let key = row_key(table, doc.get(key_column).unwrap_or(&serde_json::Value::Null));
    (key, doc)
}

async fn write(client: &mut Client, changes: Vec<Change>, fence: Option<Vec<u8>>) -> Result<(), String> {
    for chunk in changes.chunks(OPS_PER_TXN) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|c| match c {
                Change::Put(k, v) => TxnOp::put(k.as_str(), v.as_str(), None),
                Change::Delete(k) => TxnOp::delete(k.as_str(), None),
            })
            .collect();
        let txn = match &fence {
            // The election key this leader holds still exists: a node
            // whose lease lapsed cannot write.
            Some(key) => Txn::new().when([Compare::create_revision(key.clone(), CompareOp::Greater, 0)]).and_then(ops),
            None => Txn::new().and_then(ops),
        };
        let r = tokio::time::timeout(ETCD_WAIT, client.txn(txn))
            .await
            .map_err(|_| format!("no answer within {} s", ETCD_WAIT.as_secs()))?
            .map_err(|e| e.to_string())?;
        if !r.succeeded() {
            return Err(FENCED.into());
        }
    }
    Ok(())
}

async fn offer(client: &mut Client, rows: Vec<(String, String)>) -> Result<usize, String> {
    let mut added = 0;
    for (k, v) in rows {
        let txn = Txn::new().when([Compare::version(k.as_str(), CompareOp::Equal, 0)]).and_then([TxnOp::put(
            k.as_str(),
            v.as_str(),
            None,
        )]);
        let r = tokio::time::timeout(ETCD_WAIT, client.txn(txn))
            .await
            .map_err(|_| format!("no answer within {} s", ETCD_WAIT.as_secs()))?
            .map_err(|e| e.to_string())?;
        added += usize::from(r.succeeded());
    }
    Ok(added)
}

async fn read_all(client: &mut Client) -> Result<Everything, String> {
    let ask = async {
        let seeded = !client.get(SEEDED, None).await?.kvs().is_empty();
        let rows = client.get(STATE_PREFIX, Some(GetOptions::new().with_prefix())).await?;
        let kvs = rows
            .kvs()
            .iter()
            .map(|kv| {
                (String::from_utf8_lossy(kv.key()).into_owned(), String::from_utf8_lossy(kv.value()).into_owned())
            })
            .collect();
        Ok::<_, etcd_client::Error>((seeded, kvs))
    };
    match tokio::time::timeout(ETCD_WAIT * 5, ask).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {} s", (ETCD_WAIT * 5).as_secs())),
    }
}

impl Mirror {
    /// A mirror to the etcd at `endpoints`, with its own thread: a store
    /// write may run in any context, async or not, and waits for etcd.
    pub fn start(endpoints: &[String]) -> Result<Self, StoreError> {
        let (jobs, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let urls = endpoints.to_vec();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        std::thread::Builder::new().name("store-etcd".into()).spawn(move || {
            runtime.block_on(async move {
                let options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(1));
                let mut client = match Client::connect(&urls, Some(options)).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(error = %e, "The shared store cannot reach etcd at all; every shared write fails.");
                        while let Some(job) = rx.recv().await {
                            match job {
                                Job::Offer { reply, .. } => drop(reply.send(Err(e.to_string()))),
                                Job::Write { reply, .. } => drop(reply.send(Err(e.to_string()))),
                                Job::ReadAll { reply } => drop(reply.send(Err(e.to_string()))),
                            }
                        }
                        return;
                    }
                };
                // Once a request failed, the next ones are refused at once
                // (not sent) until a short look finds etcd answering; one
                // look a second at most. So while etcd is away a write
                // fails in well under a second instead of each waiting out
                // ETCD_WAIT in turn behind the others.
                let mut away: Option<(Instant, String)> = None;
                while let Some(job) = rx.recv().await {
                    if let Some((at, why)) = &away {
                        // Reading everything (a take-over) always looks.
                        let due = at.elapsed() >= LOOK_AGAIN || matches!(job, Job::ReadAll { .. });
                        let back = due && {
                            let look = tokio::time::timeout(LOOK, client.get(SEEDED, None)).await;
                            matches!(look, Ok(Ok(_)))
                        };
                        if back {
                            tracing::info!("etcd answers the shared store again.");
                            away = None;
                        } else {
                            let refusal = format!("{NOT_SENT} ({why}; {:.1} s ago)", at.elapsed().as_secs_f64());
                            if due {
                                away = Some((Instant::now(), why.clone()));
                            }
                            match job {
                                Job::Offer { reply, .. } => drop(reply.send(Err(refusal))),
                                Job::Write { reply, .. } => drop(reply.send(Err(refusal))),
                                Job::ReadAll { reply } => drop(reply.send(Err(refusal))),
                            }
                            continue;
                        }
                    }
                    let failed = match job {
                        Job::Write { changes, fence, reply } => {
                            let r = write(&mut client, changes, fence).await;
                            let failed = r.as_ref().err().filter(|e| *e != FENCED).cloned();
                            let _ = reply.send(r);
                            failed
                        }
                        Job::ReadAll { reply } => {
                            let r = read_all(&mut client).await;
                            let failed = r.as_ref().err().cloned();
                            let _ = reply.send(r);
                            failed
                        }
                        Job::Offer { rows, reply } => {
                            let r = offer(&mut client, rows).await;
                            let failed = r.as_ref().err().cloned();
                            let _ = reply.send(r);
                            failed
                        }
                    };
                    if let Some(why) = failed {
                        tracing::warn!(error = %why, "The shared store's etcd request failed: later ones are refused at once until etcd answers a look (one a second).");
                        away = Some((Instant::now(), why));
                    }
                }
            });
        })?;
        Ok(Self { state: Arc::default(), jobs, endpoints: endpoints.join(",") })
    }

    fn unavailable(&self, why: impl std::fmt::Display) -> StoreError {
        StoreError::Shared(format!("etcd ({}): {why}", self.endpoints))
    }

    fn ask<T>(
        &self,
        make: impl FnOnce(std::sync::mpsc::Sender<Result<T, String>>) -> Job,
        wait: Duration,
    ) -> Result<T, String> {
        let (reply, answer) = std::sync::mpsc::channel();
        self.jobs.send(make(reply)).map_err(|_| "the etcd thread is gone".to_owned())?;
        answer.recv_timeout(wait).map_err(|_| format!("no answer within {} s", wait.as_secs()))?
    }

    /// Readies `conn` (the store's one writing connection): a temporary
    /// log table and, on each shared table, temporary triggers that log
    /// every row changed, as JSON, with its key.
    pub(super) fn install(&self, conn: &Connection) -> Result<(), StoreError> {
        conn.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS shared_log (
                 n INTEGER PRIMARY KEY AUTOINCREMENT, tbl TEXT NOT NULL, key TEXT NOT NULL, doc TEXT
             );",
        )?;
        let mut st = lock(&self.state);
        for (table, key) in SHARED {
            let mut stmt = conn.prepare(&format!("PRAGMA main.table_info({table})"))?;
            let names = stmt.query_map([], |r| r.get::<_, String>(1))?.collect::<Result<Vec<_>, _>>()?;
            let doc = |row: &str| {
                let pairs: Vec<String> = names.iter().map(|c| format!("'{c}', {row}.\"{c}\"")).collect();
                format!("json_object({})", pairs.join(", "))
            };
            conn.execute_batch(&format!(
                "CREATE TEMP TRIGGER IF NOT EXISTS shared_{table}_insert AFTER INSERT ON main.{table} BEGIN
                     INSERT INTO shared_log (tbl, key, doc) VALUES ('{table}', NEW.\"{key}\", {new});
                 END;
                 CREATE TEMP TRIGGER IF NOT EXISTS shared_{table}_update AFTER UPDATE ON main.{table} BEGIN
                     INSERT INTO shared_log (tbl, key, doc) VALUES ('{table}', OLD.\"{key}\", NULL);
                     INSERT INTO shared_log (tbl, key, doc) VALUES ('{table}', NEW.\"{key}\", {new});
                 END;
                 CREATE TEMP TRIGGER IF NOT EXISTS shared_{table}_delete AFTER DELETE ON main.{table} BEGIN
                     INSERT INTO shared_log (tbl, key, doc) VALUES ('{table}', OLD.\"{key}\", NULL);
                 END;",
                new = doc("NEW"),
            ))?;
            st.columns.insert(table.to_owned(), names);
        }
        Ok(())
    }

    /// Offers this file's tokens to etcd (those it does not hold yet), so
    /// that a token made on any node's file works on every node. Returns
    /// how many were added.
    pub(super) fn offer_tokens(&self, conn: &Connection) -> Result<usize, StoreError> {
        let rows = self.rows(conn, "tokens")?;
        self.ask(|reply| Job::Offer { rows, reply }, ETCD_WAIT * 4).map_err(|e| self.unavailable(e))
    }

    /// Whether this node leads (its writes are shared).
    pub(super) fn leads(&self) -> bool {
        lock(&self.state).fence.is_some()
    }

    /// Sends what the open transaction logged to etcd (and empties the
    /// log): `Ok` once etcd holds it, the reason otherwise. The caller
    /// commits, or rolls back, accordingly.
    pub(super) fn push(&self, conn: &Connection) -> Result<(), StoreError> {
        let mut stmt = conn.prepare("SELECT tbl, key, doc FROM temp.shared_log ORDER BY n")?;
        let logged = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get_ref(1)?.into(), r.get::<_, Option<String>>(2)?)))?
            .collect::<Result<Vec<(String, Value, Option<String>)>, _>>()?;
        conn.execute("DELETE FROM temp.shared_log", [])?;
        if logged.is_empty() {
            return Ok(());
        }
        // One operation per key (etcd refuses a transaction naming a key
        // twice): a row changed twice in the batch goes as it ended.
        let mut changes: Vec<Change> = Vec::new();
        let mut at: HashMap<String, usize> = HashMap::new();
        for (table, key, doc) in logged {
            let key = match key {
                Value::Integer(i) => row_key(&table, &i.into()),
                Value::Text(t) => row_key(&table, &t.into()),
                other => row_key(&table, &format!("{other:?}").into()),
            };
            let change = match doc {
                Some(d) => Change::Put(key.clone(), d),
                None => Change::Delete(key.clone()),
            };
            match at.get(&key) {
                Some(&i) => changes[i] = change,
                None => {
                    at.insert(key, changes.len());
                    changes.push(change);
                }
            }
        }
        let fence = lock(&self.state).fence.clone();
        self.ask(|reply| Job::Write { changes, fence, reply }, ETCD_WAIT + Duration::from_secs(1)).map_err(|e| {
            // Refused is refused, and not sent is not sent; anything else
            // may still land in etcd.
            if e != FENCED && !e.starts_with(NOT_SENT) {
                lock(&self.state).uncertain = true;
            }
            self.unavailable(e)
        })
    }

    /// Whether a write's outcome is unknown (see `Shared::uncertain`).
    pub(super) fn uncertain(&self) -> bool {
        lock(&self.state).uncertain
    }

    /// Reads the shared tables again from etcd (after a write whose
    /// outcome is unknown), keeping the fence; the store then holds
    /// whatever etcd did with that write.
    pub(super) fn resync(&self, conn: &mut Connection) -> Result<String, StoreError> {
        let (_, kvs) = self.ask(|reply| Job::ReadAll { reply }, ETCD_WAIT * 6).map_err(|e| self.unavailable(e))?;
        let done = self.import(conn, &kvs)?;
        conn.execute("DELETE FROM temp.shared_log", [])?;
        lock(&self.state).uncertain = false;
        Ok(done)
    }

    /// This node follows: nothing it writes is shared.
    pub(super) fn follow(&self) {
        lock(&self.state).fence = None;
    }

    /// This node leads holding `fence`: replaces the shared tables of
    /// `conn` with etcd's (or seeds etcd from them, the first time), then
    /// shares every change. Returns what it did, for the log.
    pub(super) fn take_over(&self, conn: &mut Connection, fence: Vec<u8>) -> Result<String, StoreError> {
        let (seeded, kvs) = self.ask(|reply| Job::ReadAll { reply }, ETCD_WAIT * 6).map_err(|e| self.unavailable(e))?;
        let done = if seeded { self.import(conn, &kvs)? } else { self.seed(conn, &fence)? };
        conn.execute("DELETE FROM temp.shared_log", [])?;
        let mut st = lock(&self.state);
        st.fence = Some(fence);
        st.uncertain = false;
        Ok(done)
    }

    fn import(&self, conn: &mut Connection, kvs: &[(String, String)]) -> Result<String, StoreError> {
        let columns = lock(&self.state).columns.clone();
        let tx = conn.transaction()?;
        let mut counts: Vec<String> = Vec::new();
        for (table, _) in SHARED {
            let prefix = format!("{STATE_PREFIX}{table}/");
            // Tokens made on this node's file are kept beside etcd's.
            if table != "tokens" {
                tx.execute(&format!("DELETE FROM {table}"), [])?;
            }
            let known = columns.get(table).cloned().unwrap_or_default();
            let mut n = 0;
            for (_, doc) in kvs.iter().filter(|(k, _)| k.starts_with(&prefix)) {
                let Ok(serde_json::Value::Object(doc)) = serde_json::from_str::<serde_json::Value>(doc) else {
                    tracing::warn!(table, "A shared row that is not a JSON object; skipped.");
                    continue;
                };
                let cols: Vec<&String> = doc.keys().filter(|c| known.contains(c)).collect();
                let sql = format!(
                    "INSERT OR REPLACE INTO {table} ({}) VALUES ({})",
                    cols.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", "),
                    (1..=cols.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")
                );
                let values: Vec<Value> = cols.iter().map(|c| value(&doc[c.as_str()])).collect();
                tx.execute(&sql, rusqlite::params_from_iter(values))?;
                n += 1;
            }
            counts.push(format!("{n} {table}"));
        }
        tx.commit()?;
        // Tokens only this file knew go to etcd, so every node knows them.
        let rows = self.rows(conn, "tokens")?;
        let missing: Vec<Change> = rows
            .into_iter()
            .filter(|(k, _)| !kvs.iter().any(|(key, _)| key == k))
            .map(|(k, v)| Change::Put(k, v))
            .collect();
        if !missing.is_empty() {
            self.ask(|reply| Job::Write { changes: missing, fence: None, reply }, ETCD_WAIT * 3)
                .map_err(|e| self.unavailable(e))?;
        }
        Ok(format!("imported from etcd: {}", counts.join(", ")))
    }

    /// Every row of `table` as (etcd key, JSON).
    fn rows(&self, conn: &Connection, table: &str) -> Result<Vec<(String, String)>, StoreError> {
        let columns = lock(&self.state).columns.get(table).cloned().unwrap_or_default();
        let mut stmt = conn.prepare(&format!("SELECT * FROM {table}"))?;
        let rows = stmt.query_map([], |r| {
            let (key, doc) = row(table, &columns, |i| r.get_ref(i).ok().map(json));
            Ok((key, serde_json::Value::Object(doc).to_string()))
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn seed(&self, conn: &Connection, fence: &[u8]) -> Result<String, StoreError> {
        let mut changes = Vec::new();
        let mut counts = Vec::new();
        for (table, _) in SHARED {
            let rows = self.rows(conn, table)?;
            counts.push(format!("{} {table}", rows.len()));
            changes.extend(rows.into_iter().map(|(k, v)| Change::Put(k, v)));
        }
        changes.push(Change::Put(SEEDED.to_owned(), chrono::Utc::now().to_rfc3339()));
        let fence = Some(fence.to_vec());
        self.ask(|reply| Job::Write { changes, fence, reply }, ETCD_WAIT * 10).map_err(|e| self.unavailable(e))?;
        Ok(format!("etcd seeded from this node's store: {}", counts.join(", ")))
    }
}
