//! The embedded store: SQLite compiled in (no server to install), holding
//! partner channels, access-token hashes and the as-run log. Schema changes
//! are numbered migrations applied in order at open; the version reached is
//! kept in `PRAGMA user_version`.
//!
//! Channels are stored in their configuration-file form (a TOML table,
//! secrets included: the legs need them) and validated again when read, so
//! one parser serves the file, the API and the store.

use std::path::Path;
use std::sync::Mutex;

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, params};

mod alerts;
pub mod mirror;
pub mod writer;
pub use alerts::{Delivery, DeliveryOutcome, DeliveryState, DueDelivery, StoredAlert};
pub use writer::Writer;

use crate::config::{self, Channel, ChannelId};
use crate::schedule::breaks::AdBreak;
use crate::schedule::{Event, EventId, EventState};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The store's file could not be created or made private.
    #[error("store: {0}")]
    File(#[from] std::io::Error),
    /// Another daemon holds the store.
    #[error("store: {path} is in use by another simulcastd ({holder}); one daemon per store")]
    InUse {
        /// The store.
        path: String,
        /// What the lock file says about its holder.
        holder: String,
    },
    /// A channel cannot be written as TOML (a value TOML cannot hold).
    #[error("store: channel {id} cannot be written: {reason}")]
    Unwritable {
        /// The channel.
        id: String,
        /// Why.
        reason: String,
    },
    /// The store holds what the coordinator's memory does not (a row it
    /// was to insert, or lacks one it was to change).
    #[error("store: {0}")]
    Conflict(String),
    /// Cluster mode: etcd did not take a shared write (it is away, or this
    /// node no longer leads), so the store did not either.
    #[error("shared state: {0}")]
    Shared(String),
    /// A stored row no longer validates (edited by hand, or a newer schema).
    #[error("store: stored row {id} is invalid: {reason}")]
    Corrupt {
        /// The row.
        id: String,
        /// Why.
        reason: String,
    },
}

/// The TOML text a channel is stored as.
fn channel_doc(ch: &Channel) -> Result<String, StoreError> {
    config::channel_to_toml(ch).map_err(|e| StoreError::Unwritable { id: ch.id.to_string(), reason: e.to_string() })
}

/// Migrations, in order; index + 1 is the schema version each one reaches.
const MIGRATIONS: &[&str] = &[
    // 1: channels, tokens, as-run log.
    "CREATE TABLE channels (
         id TEXT PRIMARY KEY,
         doc TEXT NOT NULL,
         position INTEGER NOT NULL
     );
     CREATE TABLE tokens (
         name TEXT PRIMARY KEY,
         role TEXT NOT NULL,
         sha256 TEXT NOT NULL UNIQUE,
         created_utc TEXT NOT NULL
     );
     CREATE TABLE asrun (
         seq INTEGER PRIMARY KEY AUTOINCREMENT,
         event_id TEXT NOT NULL,
         utc TEXT NOT NULL,
         channel_id TEXT NOT NULL,
         local_time TEXT NOT NULL,
         kind TEXT NOT NULL,
         detail TEXT NOT NULL,
         actor TEXT NOT NULL
     );
     CREATE INDEX asrun_event ON asrun (event_id, seq);",
    // 2: events. Instants are RFC 3339 UTC text, durations milliseconds.
    "CREATE TABLE events (
         id TEXT PRIMARY KEY,
         title TEXT NOT NULL,
         on_air_utc TEXT NOT NULL,
         duration_ms INTEGER NOT NULL,
         preroll_ms INTEGER NOT NULL,
         postroll_ms INTEGER NOT NULL,
         channel_ids TEXT NOT NULL,
         state TEXT NOT NULL,
         ended_utc TEXT,
         created_utc TEXT NOT NULL
     );",
    // 3: delayed legs make an event last longer for them.
    "ALTER TABLE events ADD COLUMN max_delay_ms INTEGER NOT NULL DEFAULT 0;",
    // 4: the zone of each entry's local time (older entries: empty).
    "ALTER TABLE asrun ADD COLUMN timezone TEXT NOT NULL DEFAULT '';",
    // 5: rehearsal reports and recurring rehearsals (JSON documents).
    "CREATE TABLE rehearsals (
         id TEXT PRIMARY KEY,
         event_id TEXT NOT NULL,
         started_utc TEXT NOT NULL,
         passed INTEGER NOT NULL,
         report TEXT NOT NULL
     );
     CREATE INDEX rehearsals_event ON rehearsals (event_id, started_utc);
     CREATE TABLE rehearsal_schedules (
         id TEXT PRIMARY KEY,
         event_id TEXT NOT NULL,
         doc TEXT NOT NULL
     );",
    // 6: alerts (the JSON body as sent) and their delivery to each webhook.
    "CREATE TABLE alerts (
         key TEXT PRIMARY KEY,
         raised_utc TEXT NOT NULL,
         event_id TEXT NOT NULL,
         severity TEXT NOT NULL,
         kind TEXT NOT NULL,
         body TEXT NOT NULL
     );
     CREATE INDEX alerts_raised ON alerts (raised_utc);
     CREATE TABLE alert_deliveries (
         key TEXT NOT NULL REFERENCES alerts (key),
         webhook TEXT NOT NULL,
         state TEXT NOT NULL,
         attempts INTEGER NOT NULL DEFAULT 0,
         last_error TEXT NOT NULL DEFAULT '',
         next_utc TEXT,
         delivered_utc TEXT,
         PRIMARY KEY (key, webhook)
     );
     CREATE INDEX alert_deliveries_due ON alert_deliveries (state, next_utc);",
    // 7: ad breaks.
    "CREATE TABLE breaks (
         id TEXT PRIMARY KEY,
         event_id TEXT NOT NULL,
         start_utc TEXT NOT NULL,
         duration_ms INTEGER NOT NULL,
         channel_ids TEXT NOT NULL,
         splice_event_id INTEGER NOT NULL UNIQUE,
         created_utc TEXT NOT NULL
     );
     CREATE INDEX breaks_event ON breaks (event_id, start_utc);",
    // 8: the visual as-run: the picture partners got at an entry's instant.
    "CREATE TABLE asrun_pictures (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         event_id TEXT NOT NULL,
         kind TEXT NOT NULL,
         channel_id TEXT NOT NULL,
         utc TEXT NOT NULL,
         taken_utc TEXT NOT NULL,
         jpeg BLOB NOT NULL
     );
     CREATE INDEX asrun_pictures_event ON asrun_pictures (event_id);",
    // 9: an event's entries of a few kinds, read when its relay starts,
    // without reading its whole log.
    "CREATE INDEX asrun_event_kind ON asrun (event_id, kind, seq);",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// A stored access token: its name, role and SHA-256 (hex) of its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Who it was made for (`night-shift`).
    pub name: String,
    /// `observer`, `operator` or `admin`.
    pub role: String,
    /// Hex SHA-256 of the token; the token itself is never stored.
    pub sha256: String,
}

/// One as-run entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AsRunEntry {
    /// The event (or `-` for entries about the daemon itself).
    pub event_id: String,
    /// RFC 3339 UTC.
    pub utc: String,
    /// The leg, empty for event-wide entries.
    pub channel_id: String,
    /// ISO 8601 with offset, in the leg's zone (UTC for event-wide entries).
    pub local_time: String,
    /// The IANA zone of `local_time` (`UTC` for event-wide entries).
    pub timezone: String,
    /// What happened (`channel-created`, `leg-error`, ...).
    pub kind: String,
    /// Details, never a secret.
    pub detail: String,
    /// The caller's token name, or `simulcastd`.
    pub actor: String,
}

/// The store. One connection, used by the coordinator (the one owner of
/// state); the mutex only makes it shareable with read-only helpers.
/// [`Store::reader`] gives readers a connection of their own.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
    /// The file (none in memory), for [`Store::reader`].
    path: Option<std::path::PathBuf>,
    /// As-run entries written since the store was opened (counted before
    /// their commit): a watcher fetches the log again when it changes.
    asrun_written: std::sync::atomic::AtomicU64,
    /// Checkpoints the WAL from its own thread and connection (file
    /// stores), so that no write of the coordinator's pays for one.
    _checkpointer: Option<Checkpointer>,
    /// Cluster mode: the shared tables' mirror in etcd.
    mirror: std::sync::OnceLock<mirror::Mirror>,
}

/// How often the WAL is checkpointed into the database file.
pub const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// A thread with its own connection that checkpoints the WAL every
/// [`CHECKPOINT_EVERY`] (PASSIVE: it never waits for, nor blocks, the
/// writer). SQLite otherwise checkpoints inside the commit that crosses
/// 1000 pages, syncing the database file there: a write of the
/// coordinator's, and every command queued behind it, waited up to a
/// second on a busy disk (`cargo bench --bench control`). Stops, after a
/// last checkpoint, when the store is dropped.
#[derive(Debug)]
struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let checkpoint = move || {
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "WAL checkpoint failed; the next one tries again.");
            }
        };
        let thread = std::thread::Builder::new().name("store-checkpoint".into()).spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                checkpoint();
            }
            checkpoint();
        })?;
        Ok(Self { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Creates `path` (mode 0600) if it is missing, and makes it and its
/// existing WAL and shared-memory files 0600 if they are not.
fn owner_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    for p in [path.to_owned(), Store::sidecar(path, "-wal"), Store::sidecar(path, "-shm")] {
        match std::fs::metadata(&p) {
            Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?
            }
            _ => {}
        }
    }
    Ok(())
}

/// One daemon's exclusive hold on a store: an advisory `flock` on
/// `<store>.lock` (mode 0600, holding the holder's pid), released when the
/// process ends, however it ends. A second daemon on the same store would
/// resume the same live event and send every partner two interleaved copies.
#[derive(Debug)]
pub struct StoreLock {
    _file: std::fs::File,
}

impl StoreLock {
    /// Takes the lock of the store at `path`, or says who holds it.
    pub fn take(path: &Path) -> Result<Self, StoreError> {
        use std::io::{Read, Seek, Write};
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let lock_path = Store::sidecar(path, ".lock");
        let named = |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", lock_path.display()));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(named)?;
        // SAFETY: flock on a descriptor this function owns; no memory involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(named(e).into());
            }
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "its lock is held".to_owned(),
                pid => format!("pid {pid}"),
            };
            return Err(StoreError::InUse { path: path.display().to_string(), holder });
        }
        file.set_len(0).map_err(named)?;
        file.rewind().map_err(named)?;
        writeln!(file, "{}", std::process::id()).map_err(named)?;
        Ok(Self { _file: file })
    }
}

impl Store {
    /// Opens (creating if needed) the store at `path` and migrates it. The
    /// store holds SRT passphrases and RTMP stream keys: the file (and the
    /// WAL and shared-memory files SQLite makes with its permissions) is
    /// readable by its owner only, whatever the umask.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        owner_only(path).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let conn = Connection::open(path)?;
        // WAL survives a SIGKILL with every committed row; NORMAL sync is
        // durable against process death (not power loss), enough here.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut store = Self::migrate(conn)?;
        store.path = Some(path.to_owned());
        match Checkpointer::start(path) {
            Ok(c) => {
                store.conn().pragma_update(None, "wal_autocheckpoint", 0)?;
                store._checkpointer = Some(c);
            }
            Err(e) => tracing::warn!(error = %e, "No checkpoint thread; SQLite checkpoints inside commits."),
        }
        Ok(store)
    }

    /// The path of the WAL or shared-memory file of the store at `path`.
    fn sidecar(path: &Path, suffix: &str) -> std::path::PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        name.into()
    }

    /// A store in memory (tests, checks).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::migrate(Connection::open_in_memory()?)
    }

    fn migrate(mut conn: Connection) -> Result<Self, StoreError> {
        let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
        let tx = conn.transaction()?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        tx.commit()?;
        Ok(Self::over(conn))
    }

    /// A store over `conn`, as opened (no file path, checkpointer or mirror yet).
    fn over(conn: Connection) -> Self {
        Self {
            conn: Mutex::new(conn),
            path: None,
            asrun_written: Default::default(),
            _checkpointer: None,
            mirror: std::sync::OnceLock::new(),
        }
    }

    /// A connection of its own to the same file, that only reads (`PRAGMA
    /// query_only`): what the API reads (channels, as-run logs and their
    /// pictures, alerts) goes through it, beside the coordinator's writes
    /// (WAL: a reader sees every committed write and blocks no writer).
    /// `None` for a store in memory, which a second connection cannot see.
    pub fn reader(&self) -> Option<Result<Store, StoreError>> {
        let path = self.path.as_ref()?;
        let open = || -> Result<Store, StoreError> {
            let conn = Connection::open(path)?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.pragma_update(None, "query_only", true)?;
            Ok(Self::over(conn))
        };
        Some(open())
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Cluster mode: shares the shared tables through the etcd at
    /// `endpoints` (see [`mirror`]). Nothing is shared until
    /// [`Store::take_over`].
    pub fn share_through(&self, endpoints: &[String]) -> Result<(), StoreError> {
        let m = mirror::Mirror::start(endpoints)?;
        m.install(&self.conn())?;
        match m.offer_tokens(&self.conn()) {
            Ok(n) => tracing::info!(added = n, "This store's tokens offered to the cluster."),
            Err(e) => {
                tracing::warn!(error = %e, "This store's tokens could not be offered to the cluster (etcd away?); they work once this node leads.")
            }
        }
        self.mirror.set(m).map_err(|_| StoreError::Shared("the store is shared already".into()))
    }

    /// Cluster mode: this node leads holding the election key `fence`.
    /// The shared tables are replaced by etcd's (or seed it, the first
    /// time), and every change to them is shared from now on. Says what
    /// it did.
    pub fn take_over(&self, fence: Vec<u8>) -> Result<String, StoreError> {
        let m = self.mirror.get().ok_or_else(|| StoreError::Shared("this store is not shared".into()))?;
        m.take_over(&mut self.conn(), fence)
    }

    /// Cluster mode: this node follows; nothing it writes is shared.
    pub fn follow(&self) {
        if let Some(m) = self.mirror.get() {
            m.follow();
        }
    }

    /// Runs `f`'s writes as one transaction that, while this node leads
    /// a cluster, commits only once etcd holds the shared rows it changed
    /// (and is rolled back if etcd refuses them). In single-node mode, or
    /// on a follower, just `f`.
    pub fn shared<T>(&self, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        let Some(m) = self.mirror.get().filter(|m| m.leads()) else { return f() };
        if m.uncertain() {
            // etcd never answered an earlier write, and may have applied
            // it: the store follows etcd again first, and this batch fails
            // so that master control reads the store back.
            let done = m.resync(&mut self.conn())?;
            tracing::warn!(what = %done, "Read the shared state again from etcd after a write it never answered.");
            return Err(StoreError::Shared(
                "etcd did not answer an earlier write and may have applied it: the state was read again from etcd; \
                 try again"
                    .into(),
            ));
        }
        self.conn().execute_batch("BEGIN IMMEDIATE")?;
        let r = f();
        let conn = self.conn();
        match r.and_then(|v| m.push(&conn).map(|()| v)) {
            Ok(v) => {
                conn.execute_batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                if let Err(rb) = conn.execute_batch("ROLLBACK") {
                    tracing::error!(error = %rb, "Cannot roll back a refused shared write.");
                }
                Err(e)
            }
        }
    }

    /// The schema version of the open store.
    pub fn schema_version(&self) -> Result<usize, StoreError> {
        Ok(self.conn().pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize)
    }

    /// Inserts a channel; `false` if the id exists already.
    pub fn insert_channel(&self, ch: &Channel) -> Result<bool, StoreError> {
        let conn = self.conn();
        let n = conn.execute(
            "INSERT OR IGNORE INTO channels (id, doc, position)
             VALUES (?1, ?2, (SELECT IFNULL(MAX(position), 0) + 1 FROM channels))",
            params![ch.id.as_str(), channel_doc(ch)?],
        )?;
        Ok(n == 1)
    }

    /// Replaces a channel; `false` if there is none with that id.
    pub fn update_channel(&self, ch: &Channel) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute("UPDATE channels SET doc = ?2 WHERE id = ?1", params![ch.id.as_str(), channel_doc(ch)?])?;
        Ok(n == 1)
    }

    /// Deletes a channel; `false` if there was none.
    pub fn delete_channel(&self, id: &ChannelId) -> Result<bool, StoreError> {
        Ok(self.conn().execute("DELETE FROM channels WHERE id = ?1", params![id.as_str()])? == 1)
    }

    /// One channel.
    pub fn channel(&self, id: &ChannelId) -> Result<Option<Channel>, StoreError> {
        let doc: Option<String> = self
            .conn()
            .query_row("SELECT doc FROM channels WHERE id = ?1", params![id.as_str()], |r| r.get(0))
            .optional()?;
        doc.map(|d| decode(id.as_str(), &d)).transpose()
    }

    /// Every channel, in the order they were added.
    pub fn channels(&self) -> Result<Vec<Channel>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id, doc FROM channels ORDER BY position")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, doc) = row?;
            out.push(decode(&id, &doc)?);
        }
        Ok(out)
    }

    /// Adds a token record; `false` if the name is taken.
    pub fn insert_token(&self, t: &TokenRecord, created_utc: &str) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO tokens (name, role, sha256, created_utc) VALUES (?1, ?2, ?3, ?4)",
            params![t.name, t.role, t.sha256, created_utc],
        )?;
        Ok(n == 1)
    }

    /// Every token record.
    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name, role, sha256 FROM tokens ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok(TokenRecord { name: r.get(0)?, role: r.get(1)?, sha256: r.get(2)? }))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Adds an event; `false` if the id exists already.
    pub fn insert_event(&self, e: &Event) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            &format!(
                "INSERT OR IGNORE INTO events ({EVENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
            ),
            params![
                e.id.0,
                e.title,
                utc_text(e.on_air),
                ms(e.duration),
                ms(e.preroll),
                ms(e.postroll),
                e.channel_ids.iter().map(ChannelId::as_str).collect::<Vec<_>>().join(","),
                e.state.as_str(),
                e.ended.map(utc_text),
                utc_text(e.created),
                ms(e.max_delay),
            ],
        )?;
        Ok(n == 1)
    }

    /// Writes an event's changeable parts (state, duration, end) and the
    /// as-run entry that says why, in one transaction: the log never
    /// disagrees with the state.
    pub fn update_event(&self, e: &Event, entry: &AsRunEntry) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.savepoint()?;
        tx.execute(
            "UPDATE events SET state = ?2, duration_ms = ?3, ended_utc = ?4 WHERE id = ?1",
            params![e.id.0, e.state.as_str(), ms(e.duration), e.ended.map(utc_text)],
        )?;
        insert_asrun(&tx, entry, &self.asrun_written)?;
        tx.commit()?;
        Ok(())
    }

    /// Every event, oldest T0 first, and apart from them each row that
    /// cannot be read (one bad row must not cost the schedule its good
    /// ones; the caller reports them).
    pub fn events(&self) -> Result<(Vec<Event>, Vec<StoreError>), StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {EVENT_COLUMNS} FROM events ORDER BY on_air_utc, id"))?;
        let mut events = Vec::new();
        let mut unreadable = Vec::new();
        for row in stmt.query_map([], event_row)? {
            match row.map_err(StoreError::from).and_then(decode_event) {
                Ok(e) => events.push(e),
                Err(e) => unreadable.push(e),
            }
        }
        Ok((events, unreadable))
    }

    /// Appends an as-run entry (committed before this returns).
    pub fn append_asrun(&self, e: &AsRunEntry) -> Result<(), StoreError> {
        insert_asrun(&self.conn(), e, &self.asrun_written)
    }

    /// Appends `entries` in one transaction (a relay's legs' totals): one
    /// commit, not one per leg.
    pub fn append_asrun_all(&self, entries: &[AsRunEntry]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.savepoint()?;
        for e in entries {
            insert_asrun(&tx, e, &self.asrun_written)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// As-run entries written since the store was opened (a few may have
    /// been rolled back): changes whenever the log may have.
    pub fn asrun_written(&self) -> u64 {
        self.asrun_written.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Keeps `jpeg`, taken at `taken_utc`, as the picture of as-run entry
    /// `e` (found again by its event, kind, leg and UTC time); its id.
    pub fn insert_asrun_picture(&self, e: &AsRunEntry, taken_utc: &str, jpeg: &[u8]) -> Result<i64, StoreError> {
        // A watcher of the log reads it again for the picture too.
        self.asrun_written.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let conn = self.conn();
        conn.execute(
            "INSERT INTO asrun_pictures (event_id, kind, channel_id, utc, taken_utc, jpeg) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![e.event_id, e.kind, e.channel_id, e.utc, taken_utc, jpeg],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// The pictures of `event_id`'s as-run entries: (id, kind, leg, UTC).
    pub fn asrun_pictures(&self, event_id: &str) -> Result<Vec<(i64, String, String, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT id, kind, channel_id, utc FROM asrun_pictures WHERE event_id = ?1 ORDER BY id")?;
        let rows = stmt.query_map(params![event_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Picture `id` of an as-run entry: (event, taken UTC, JPEG).
    pub fn asrun_picture(&self, id: i64) -> Result<Option<(String, String, Vec<u8>)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT event_id, taken_utc, jpeg FROM asrun_pictures WHERE id = ?1")?;
        let mut rows = stmt.query_map(params![id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.next().transpose()?)
    }

    /// The as-run entries of `event_id`, oldest first.
    pub fn asrun(&self, event_id: &str) -> Result<Vec<AsRunEntry>, StoreError> {
        Ok(self.asrun_page(event_id, 0, usize::MAX)?.into_iter().map(|(_, e)| e).collect())
    }

    /// An event's entries of the given kinds, oldest first: what a relay
    /// starting again needs of a long log, read through its own index.
    pub fn asrun_kinds(&self, event_id: &str, kinds: &[&str]) -> Result<Vec<AsRunEntry>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT seq, event_id, utc, channel_id, local_time, kind, detail, actor, timezone FROM asrun
             WHERE event_id = ?1 AND kind = ?2",
        )?;
        let mut found: Vec<(i64, AsRunEntry)> = Vec::new();
        for kind in kinds {
            let rows = stmt.query_map(params![event_id, kind], |r| Ok((r.get(0)?, asrun_row(r, 1)?)))?;
            found.extend(rows.collect::<Result<Vec<_>, _>>()?);
        }
        found.sort_by_key(|(seq, _)| *seq);
        Ok(found.into_iter().map(|(_, e)| e).collect())
    }

    /// The newest `n` entries of an event's log, oldest first.
    pub fn asrun_tail(&self, event_id: &str, n: usize) -> Result<Vec<AsRunEntry>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT event_id, utc, channel_id, local_time, kind, detail, actor, timezone FROM
             (SELECT * FROM asrun WHERE event_id = ?1 ORDER BY seq DESC LIMIT ?2) ORDER BY seq",
        )?;
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![event_id, n], |r| asrun_row(r, 0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Up to `limit` entries of an event's log after the one numbered
    /// `after` (0: from the start), oldest first, each with its number.
    pub fn asrun_page(&self, event_id: &str, after: i64, limit: usize) -> Result<Vec<(i64, AsRunEntry)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT seq, event_id, utc, channel_id, local_time, kind, detail, actor, timezone FROM asrun
             WHERE event_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![event_id, after, limit], |r| Ok((r.get(0)?, asrun_row(r, 1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl Store {
    /// Writes a rehearsal report (again, as it progresses).
    pub fn save_rehearsal(&self, r: &crate::rehearsal::Report) -> Result<(), StoreError> {
        let doc = serde_json::to_string(r).map_err(|e| corrupt(&r.id, e))?;
        self.conn().execute(
            "INSERT INTO rehearsals (id, event_id, started_utc, passed, report) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (id) DO UPDATE SET passed = excluded.passed, report = excluded.report",
            params![r.id, r.event_id, utc_text(r.started_at), r.passed, doc],
        )?;
        Ok(())
    }

    /// Rehearsal reports, oldest first; of one event, or all.
    pub fn rehearsals(&self, event_id: Option<&str>) -> Result<Vec<crate::rehearsal::Report>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT id, report FROM rehearsals WHERE ?1 IS NULL OR event_id = ?1 ORDER BY started_utc, id")?;
        let rows = stmt.query_map(params![event_id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let rows: Vec<(String, String)> = rows.collect::<Result<_, _>>()?;
        rows.into_iter().map(|(id, doc)| serde_json::from_str(&doc).map_err(|e| corrupt(&id, e))).collect()
    }

    /// Writes a recurring rehearsal.
    pub fn save_schedule(&self, r: &crate::rehearsal::recurring::Recurring) -> Result<(), StoreError> {
        let doc = serde_json::to_string(r).map_err(|e| corrupt(&r.id, e))?;
        self.conn().execute(
            "INSERT INTO rehearsal_schedules (id, event_id, doc) VALUES (?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
            params![r.id, r.event_id, doc],
        )?;
        Ok(())
    }

    /// Every recurring rehearsal.
    pub fn schedules(&self) -> Result<Vec<crate::rehearsal::recurring::Recurring>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id, doc FROM rehearsal_schedules ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let rows: Vec<(String, String)> = rows.collect::<Result<_, _>>()?;
        rows.into_iter().map(|(id, doc)| serde_json::from_str(&doc).map_err(|e| corrupt(&id, e))).collect()
    }

    /// Deletes a recurring rehearsal; `false` if there was none.
    pub fn delete_schedule(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.conn().execute("DELETE FROM rehearsal_schedules WHERE id = ?1", params![id])? == 1)
    }
}

/// Ad breaks.
impl Store {
    /// Adds breaks and the as-run entry that says so, in one transaction.
    pub fn insert_breaks(&self, breaks: &[AdBreak], entry: &AsRunEntry) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.savepoint()?;
        for b in breaks {
            tx.execute(
                "INSERT INTO breaks (id, event_id, start_utc, duration_ms, channel_ids, splice_event_id, created_utc)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    b.id,
                    b.event_id.0,
                    utc_text(b.start),
                    ms(b.duration),
                    b.channel_ids.iter().map(ChannelId::as_str).collect::<Vec<_>>().join(","),
                    b.splice_event_id,
                    utc_text(b.created),
                ],
            )?;
        }
        insert_asrun(&tx, entry, &self.asrun_written)?;
        tx.commit()?;
        Ok(())
    }

    /// Deletes a break and writes the as-run entry that says so; `false`
    /// (nothing written) if there was none.
    pub fn delete_break(&self, id: &str, entry: &AsRunEntry) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.savepoint()?;
        if tx.execute("DELETE FROM breaks WHERE id = ?1", params![id])? != 1 {
            return Ok(false);
        }
        insert_asrun(&tx, entry, &self.asrun_written)?;
        tx.commit()?;
        Ok(true)
    }

    /// Every break, by start.
    pub fn breaks(&self) -> Result<Vec<AdBreak>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, event_id, start_utc, duration_ms, channel_ids, splice_event_id, created_utc
             FROM breaks ORDER BY start_utc, id",
        )?;
        type Row = (String, String, String, i64, String, u32, String);
        let rows =
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)))?;
        let rows: Vec<Row> = rows.collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(id, event_id, start, duration, channels, splice_event_id, created)| {
                let instant = |s: &str| {
                    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).map_err(|e| corrupt(&id, e))
                };
                let channel_ids = channels
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(|c| ChannelId::parse(c).map_err(|e| corrupt(&id, e)))
                    .collect::<Result<_, _>>()?;
                Ok(AdBreak {
                    start: instant(&start)?,
                    created: instant(&created)?,
                    id,
                    event_id: EventId(event_id),
                    duration: Duration::from_millis(u64::try_from(duration).unwrap_or(0)),
                    channel_ids,
                    splice_event_id,
                })
            })
            .collect()
    }
}

/// An as-run entry from its columns `event_id, utc, channel_id,
/// local_time, kind, detail, actor, timezone`, the first at `at`.
fn asrun_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<AsRunEntry> {
    Ok(AsRunEntry {
        event_id: r.get(at)?,
        utc: r.get(at + 1)?,
        channel_id: r.get(at + 2)?,
        local_time: r.get(at + 3)?,
        kind: r.get(at + 4)?,
        detail: r.get(at + 5)?,
        actor: r.get(at + 6)?,
        timezone: r.get(at + 7)?,
    })
}

fn corrupt(id: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { id: id.to_owned(), reason: e.to_string() }
}

const EVENT_COLUMNS: &str = "id, title, on_air_utc, duration_ms, preroll_ms, postroll_ms, channel_ids, state, ended_utc, created_utc, max_delay_ms";

fn utc_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

type EventRow = (String, String, String, i64, i64, i64, String, String, Option<String>, String, i64);

fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
    ))
}

fn decode_event(row: EventRow) -> Result<Event, StoreError> {
    let (id, title, on_air, duration, preroll, postroll, channels, state, ended, created, max_delay) = row;
    let corrupt = |reason: String| StoreError::Corrupt { id: id.clone(), reason };
    let instant = |s: &str| {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| corrupt(format!("`{s}` is not an instant from year 1 to 9999 ({e})")))
    };
    let dur = |v: i64| Duration::from_millis(u64::try_from(v).unwrap_or(0));
    let mut channel_ids = Vec::new();
    for c in channels.split(',').filter(|c| !c.is_empty()) {
        channel_ids.push(ChannelId::parse(c).map_err(&corrupt)?);
    }
    let instant = |s: &str| {
        instant(s).and_then(|t| {
            if crate::schedule::in_wire_range(t) {
                Ok(t)
            } else {
                Err(corrupt(format!("`{s}` is not an instant from year 1 to 9999 (out of range)")))
            }
        })
    };
    Ok(Event {
        title,
        on_air: instant(&on_air)?,
        duration: dur(duration),
        preroll: dur(preroll),
        postroll: dur(postroll),
        channel_ids,
        state: state.parse::<EventState>().map_err(&corrupt)?,
        ended: ended.as_deref().map(instant).transpose()?,
        created: instant(&created)?,
        max_delay: dur(max_delay),
        id: EventId(id.clone()),
    })
}

fn insert_asrun(conn: &Connection, e: &AsRunEntry, written: &std::sync::atomic::AtomicU64) -> Result<(), StoreError> {
    written.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    conn.execute(
        "INSERT INTO asrun (event_id, utc, channel_id, local_time, kind, detail, actor, timezone)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![e.event_id, e.utc, e.channel_id, e.local_time, e.kind, e.detail, e.actor, e.timezone],
    )?;
    Ok(())
}

fn decode(id: &str, doc: &str) -> Result<Channel, StoreError> {
    config::parse_stored_channel(doc).map_err(|errs| StoreError::Corrupt {
        id: id.to_owned(),
        reason: errs.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Channel {
        config::default_config().channels.into_iter().find(|c| c.id.as_str() == "kz-jibek-joly").unwrap()
    }

    /// The WAL reaches the database file through the checkpoint thread,
    /// not through a commit: what the database file alone holds (read
    /// with `immutable=1`, which ignores the WAL) catches up with a write
    /// within a few checkpoint periods, while commits never checkpoint.
    #[test]
    fn the_wal_is_checkpointed_by_its_own_thread_not_by_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = Store::open(&path).unwrap();
        let auto: i64 = store.conn().pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0)).unwrap();
        assert_eq!(auto, 0, "commits would checkpoint");
        store.insert_channel(&sample()).unwrap();
        let in_file = || -> i64 {
            let uri = format!("file:{}?immutable=1", path.display());
            let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI;
            let c = Connection::open_with_flags(uri, flags).unwrap();
            c.query_row("SELECT count(*) FROM channels", [], |r| r.get(0)).unwrap_or(-1)
        };
        let deadline = std::time::Instant::now() + CHECKPOINT_EVERY * 3;
        while in_file() != 1 {
            assert!(std::time::Instant::now() < deadline, "the channel never reached the database file");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        drop(store);
        assert_eq!(Store::open(&path).unwrap().channels().unwrap().len(), 1);
    }

    #[test]
    fn channels_round_trip_with_their_secrets_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let ch = sample();
        {
            let s = Store::open(&path).unwrap();
            assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
            assert!(s.insert_channel(&ch).unwrap());
            assert!(!s.insert_channel(&ch).unwrap(), "duplicate id accepted");
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.channel(&ch.id).unwrap().as_ref(), Some(&ch));
        assert_eq!(s.channels().unwrap(), vec![ch.clone()]);
        assert!(s.delete_channel(&ch.id).unwrap());
        assert!(s.channel(&ch.id).unwrap().is_none());
    }

    #[test]
    fn asrun_is_kept_in_order() {
        let s = Store::open_in_memory().unwrap();
        for kind in ["a", "b", "c"] {
            let e = AsRunEntry {
                event_id: "ev".into(),
                utc: "2026-11-22T15:00:00Z".into(),
                channel_id: String::new(),
                local_time: "2026-11-22T20:00:00+05:00".into(),
                timezone: "Asia/Almaty".into(),
                kind: kind.into(),
                detail: String::new(),
                actor: "t".into(),
            };
            s.append_asrun(&e).unwrap();
        }
        let all = s.asrun("ev").unwrap();
        let kinds: Vec<&str> = all.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["a", "b", "c"]);
        assert!(all.iter().all(|e| e.timezone == "Asia/Almaty"), "{all:?}");
        assert!(s.asrun("other").unwrap().is_empty());
        // Pages after an entry's number, and the tail, keep the order.
        let kinds = |v: Vec<AsRunEntry>| v.into_iter().map(|e| e.kind).collect::<Vec<_>>();
        let first = s.asrun_page("ev", 0, 2).unwrap();
        assert_eq!(kinds(first.iter().map(|(_, e)| e.clone()).collect()), ["a", "b"]);
        let rest = s.asrun_page("ev", first[1].0, 2).unwrap();
        assert_eq!(kinds(rest.into_iter().map(|(_, e)| e).collect()), ["c"]);
        assert_eq!(kinds(s.asrun_tail("ev", 2).unwrap()), ["b", "c"]);
        // Some kinds only, in log order, through their own index.
        s.append_asrun(&AsRunEntry { kind: "a".into(), ..s.asrun("ev").unwrap()[0].clone() }).unwrap();
        assert_eq!(kinds(s.asrun_kinds("ev", &["c", "a"]).unwrap()), ["a", "c", "a"]);
        let conn = s.conn();
        let plan: String = conn
            .query_row("EXPLAIN QUERY PLAN SELECT * FROM asrun WHERE event_id = 'ev' AND kind = 'a'", [], |r| r.get(3))
            .unwrap();
        assert!(plan.contains("asrun_event_kind"), "{plan}");
    }

    #[test]
    fn a_reader_sees_every_committed_write_and_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let reader = store.reader().expect("a file store has a reader").unwrap();
        let ch = crate::config::default_config().channels.remove(0);
        store.insert_channel(&ch).unwrap();
        assert_eq!(reader.channels().unwrap(), vec![ch.clone()]);
        assert!(reader.delete_channel(&ch.id).is_err(), "the reader wrote");
        assert!(Store::open_in_memory().unwrap().reader().is_none());
    }

    #[test]
    fn the_store_and_its_wal_are_the_owners_alone_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let store = Store::open(&path).unwrap();
        let ch = crate::config::default_config().channels.remove(0);
        store.insert_channel(&ch).unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let p = Store::sidecar(&path, suffix);
            assert_eq!(mode(&p), 0o600, "{} holds secrets", p.display());
        }
        drop(store);
        // A store made before this (0644) is tightened when opened.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let _again = Store::open(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
    }
}
