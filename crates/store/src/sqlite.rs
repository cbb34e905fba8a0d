//! The embedded store: one SQLite file in the data directory, in WAL mode with full sync, so an
//! acknowledged write survives a crash.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Row, params};
use zerogate_pki::{RevocationList, Serial, TokenRecord};

use crate::{
    AccessKeyRecord, CertRecord, Event, IssuedVia, Revocations, RevokedAccess, RevokedKind, Store, StoreError,
};

/// Migrations, applied in order; `PRAGMA user_version` says how many ran.
const MIGRATIONS: &[&str] = &[
    r"
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        secret_hash BLOB NOT NULL,
        spiffe_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at INTEGER
    );
    CREATE TABLE certificates (
        serial TEXT PRIMARY KEY,
        spiffe_id TEXT NOT NULL,
        not_before INTEGER NOT NULL,
        not_after INTEGER NOT NULL,
        via TEXT NOT NULL,
        renews TEXT,
        key_type TEXT NOT NULL,
        revoked_at INTEGER,
        revocation_reason TEXT
    );
    CREATE INDEX certificates_by_id ON certificates (spiffe_id);
    CREATE TABLE revoked_identities (
        spiffe_id TEXT PRIMARY KEY,
        revoked_at INTEGER NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        action TEXT NOT NULL,
        subject TEXT NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL,
        peer TEXT
    );
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
",
    r"
    CREATE TABLE access_keys (
        id TEXT PRIMARY KEY,
        secret TEXT NOT NULL,
        client TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
    );
",
    r"
    CREATE TABLE revoked_access (
        kind TEXT NOT NULL CHECK (kind IN ('credential', 'principal')),
        id TEXT NOT NULL,
        revoked_at INTEGER NOT NULL,
        reason TEXT NOT NULL,
        PRIMARY KEY (kind, id)
    );
",
];

/// SQLite behind a mutex (one writer at a time is what SQLite does anyway).
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(db)?;
        Self::setup(conn)
    }

    /// A store in memory, for tests and one-shot tools.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::setup(Connection::open_in_memory().map_err(db)?)
    }

    fn setup(mut conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(db)?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(db)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(db)?;
        let version = usize::try_from(version).map_err(|_| StoreError::Corrupt("negative schema version".into()))?;
        if version > MIGRATIONS.len() {
            return Err(StoreError::Corrupt(format!(
                "schema version {version} is newer than this zerogate knows ({})",
                MIGRATIONS.len()
            )));
        }
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = conn.transaction().map_err(db)?;
            tx.execute_batch(migration).map_err(db)?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", index + 1)).map_err(db)?;
            tx.commit().map_err(db)?;
        }
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions roll
        // back), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

const CERT_COLUMNS: &str =
    "serial, spiffe_id, not_before, not_after, via, renews, key_type, revoked_at, revocation_reason";

fn cert_from_row(row: &Row<'_>) -> rusqlite::Result<Result<CertRecord, StoreError>> {
    let serial: String = row.get(0)?;
    let via: String = row.get(4)?;
    let renews: Option<String> = row.get(5)?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("certificate {serial}: {what}"));
    Ok((|| {
        Ok(CertRecord {
            serial: Serial::parse(&serial).ok_or_else(|| corrupt("serial"))?,
            spiffe_id: row.get(1).map_err(db)?,
            not_before: row.get(2).map_err(db)?,
            not_after: row.get(3).map_err(db)?,
            via: IssuedVia::parse(&via).ok_or_else(|| corrupt("via"))?,
            renews: renews.as_deref().map(|s| Serial::parse(s).ok_or_else(|| corrupt("renews"))).transpose()?,
            key_type: row.get(6).map_err(db)?,
            revoked_at: row.get(7).map_err(db)?,
            revocation_reason: row.get(8).map_err(db)?,
        })
    })())
}

fn insert_cert(conn: &Connection, cert: &CertRecord) -> Result<(), StoreError> {
    conn.execute(
        &format!("INSERT INTO certificates ({CERT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
        params![
            cert.serial.as_str(),
            cert.spiffe_id,
            cert.not_before,
            cert.not_after,
            cert.via.as_str(),
            cert.renews.as_ref().map(Serial::as_str),
            cert.key_type,
            cert.revoked_at,
            cert.revocation_reason,
        ],
    )
    .map_err(db)?;
    Ok(())
}

impl Store for SqliteStore {
    fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO tokens (id, secret_hash, spiffe_id, created_at, expires_at, used_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![token.id, token.secret_hash, token.spiffe_id, token.created_at, token.expires_at, token.used_at],
            )
            .map_err(db)?;
        Ok(())
    }

    fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.conn()
            .query_row(
                "SELECT id, secret_hash, spiffe_id, created_at, expires_at, used_at FROM tokens WHERE id = ?1",
                [id],
                |r| {
                    Ok(TokenRecord {
                        id: r.get(0)?,
                        secret_hash: r.get(1)?,
                        spiffe_id: r.get(2)?,
                        created_at: r.get(3)?,
                        expires_at: r.get(4)?,
                        used_at: r.get(5)?,
                    })
                },
            )
            .optional()
            .map_err(db)
    }

    fn redeem_token(&self, id: &str, now: i64, cert: &CertRecord) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db)?;
        let changed = tx
            .execute("UPDATE tokens SET used_at = ?2 WHERE id = ?1 AND used_at IS NULL", params![id, now])
            .map_err(db)?;
        if changed == 0 {
            let exists: bool =
                tx.query_row("SELECT EXISTS (SELECT 1 FROM tokens WHERE id = ?1)", [id], |r| r.get(0)).map_err(db)?;
            return Err(if exists { StoreError::TokenAlreadyUsed } else { StoreError::UnknownToken });
        }
        insert_cert(&tx, cert)?;
        tx.commit().map_err(db)
    }

    fn insert_certificate(&self, cert: &CertRecord) -> Result<(), StoreError> {
        insert_cert(&self.conn(), cert)
    }

    fn certificate(&self, serial: &Serial) -> Result<Option<CertRecord>, StoreError> {
        self.conn()
            .query_row(
                &format!("SELECT {CERT_COLUMNS} FROM certificates WHERE serial = ?1"),
                [serial.as_str()],
                cert_from_row,
            )
            .optional()
            .map_err(db)?
            .transpose()
    }

    fn certificates(&self) -> Result<Vec<CertRecord>, StoreError> {
        let conn = self.conn();
        let mut statement = conn
            .prepare(&format!("SELECT {CERT_COLUMNS} FROM certificates ORDER BY not_before DESC, serial"))
            .map_err(db)?;
        let rows = statement.query_map([], cert_from_row).map_err(db)?;
        rows.map(|r| r.map_err(db)?).collect()
    }

    fn revoke_serial(&self, serial: &Serial, now: i64, reason: &str) -> Result<bool, StoreError> {
        let conn = self.conn();
        let exists: bool = conn
            .query_row("SELECT EXISTS (SELECT 1 FROM certificates WHERE serial = ?1)", [serial.as_str()], |r| r.get(0))
            .map_err(db)?;
        conn.execute(
            "UPDATE certificates SET revoked_at = ?2, revocation_reason = ?3 WHERE serial = ?1 AND revoked_at IS NULL",
            params![serial.as_str(), now, reason],
        )
        .map_err(db)?;
        Ok(exists)
    }

    fn revoke_identity(&self, spiffe_id: &str, now: i64, reason: &str) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db)?;
        tx.execute(
            "INSERT INTO revoked_identities (spiffe_id, revoked_at, reason) VALUES (?1, ?2, ?3) ON CONFLICT (spiffe_id) DO NOTHING",
            params![spiffe_id, now, reason],
        )
        .map_err(db)?;
        let revoked = tx
            .execute(
                "UPDATE certificates SET revoked_at = ?2, revocation_reason = ?3 WHERE spiffe_id = ?1 AND revoked_at IS NULL",
                params![spiffe_id, now, reason],
            )
            .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(revoked)
    }

    fn revocations(&self) -> Result<Revocations, StoreError> {
        let conn = self.conn();
        let mut out = Revocations { list: RevocationList::default(), revoked_serials: Vec::new() };
        let mut statement = conn
            .prepare("SELECT serial, revoked_at FROM certificates WHERE revoked_at IS NOT NULL ORDER BY serial")
            .map_err(db)?;
        let rows = statement.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))).map_err(db)?;
        for row in rows {
            let (serial, at) = row.map_err(db)?;
            let serial = Serial::parse(&serial).ok_or_else(|| StoreError::Corrupt(format!("serial `{serial}`")))?;
            out.list.serials.insert(serial.clone());
            out.revoked_serials.push((serial, at));
        }
        let mut statement = conn.prepare("SELECT spiffe_id FROM revoked_identities").map_err(db)?;
        let rows = statement.query_map([], |r| r.get::<_, String>(0)).map_err(db)?;
        for row in rows {
            out.list.identities.insert(row.map_err(db)?);
        }
        Ok(out)
    }

    fn next_crl_number(&self) -> Result<u64, StoreError> {
        let value: i64 = self
            .conn()
            .query_row(
                "INSERT INTO counters (name, value) VALUES ('crl', 1)
                 ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value",
                [],
                |r| r.get(0),
            )
            .map_err(db)?;
        u64::try_from(value).map_err(|_| StoreError::Corrupt("crl counter".into()))
    }

    fn insert_access_key(&self, key: &AccessKeyRecord) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO access_keys (id, secret, client, created_at, revoked_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![key.id, key.secret, key.client, key.created_at, key.revoked_at],
            )
            .map_err(db)?;
        Ok(())
    }

    fn access_keys(&self) -> Result<Vec<AccessKeyRecord>, StoreError> {
        let conn = self.conn();
        let mut statement = conn
            .prepare("SELECT id, secret, client, created_at, revoked_at FROM access_keys ORDER BY created_at, id")
            .map_err(db)?;
        let rows = statement
            .query_map([], |r| {
                Ok(AccessKeyRecord {
                    id: r.get(0)?,
                    secret: r.get(1)?,
                    client: r.get(2)?,
                    created_at: r.get(3)?,
                    revoked_at: r.get(4)?,
                })
            })
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    fn revoke_access_key(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let changed = self
            .conn()
            .execute("UPDATE access_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL", params![id, now])
            .map_err(db)?;
        Ok(changed == 1)
    }

    fn revoke_access(&self, kind: RevokedKind, id: &str, now: i64, reason: &str) -> Result<bool, StoreError> {
        let changed = self
            .conn()
            .execute(
                "INSERT INTO revoked_access (kind, id, revoked_at, reason) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (kind, id) DO NOTHING",
                params![kind.as_str(), id, now, reason],
            )
            .map_err(db)?;
        Ok(changed == 1)
    }

    fn revoked_access(&self) -> Result<Vec<RevokedAccess>, StoreError> {
        let conn = self.conn();
        let mut statement = conn
            .prepare("SELECT kind, id, revoked_at, reason FROM revoked_access ORDER BY revoked_at, kind, id")
            .map_err(db)?;
        let rows = statement
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, String>(3)?))
            })
            .map_err(db)?;
        let mut out = Vec::new();
        for row in rows {
            let (kind, id, revoked_at, reason) = row.map_err(db)?;
            let kind = match kind.as_str() {
                "credential" => RevokedKind::Credential,
                "principal" => RevokedKind::Principal,
                other => return Err(StoreError::Corrupt(format!("revoked_access kind `{other}`"))),
            };
            out.push(RevokedAccess { kind, id, revoked_at, reason });
        }
        Ok(out)
    }

    fn record_event(&self, event: &Event) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO events (at, action, subject, outcome, detail, peer) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![event.at, event.action, event.subject, event.outcome, event.detail, event.peer],
            )
            .map_err(db)?;
        Ok(())
    }

    fn events(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        let conn = self.conn();
        let mut statement = conn
            .prepare(
                "SELECT at, action, subject, outcome, detail, peer FROM
                 (SELECT * FROM events ORDER BY seq DESC LIMIT ?1) ORDER BY seq",
            )
            .map_err(db)?;
        let rows = statement
            .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                Ok(Event {
                    at: r.get(0)?,
                    action: r.get(1)?,
                    subject: r.get(2)?,
                    outcome: r.get(3)?,
                    detail: r.get(4)?,
                    peer: r.get(5)?,
                })
            })
            .map_err(db)?;
        rows.map(|r| r.map_err(db)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(serial: &str, id: &str) -> CertRecord {
        CertRecord {
            serial: Serial::parse(serial).unwrap(),
            spiffe_id: id.into(),
            not_before: 100,
            not_after: 3700,
            via: IssuedVia::Enroll,
            renews: None,
            key_type: "ECDSA P-256".into(),
            revoked_at: None,
            revocation_reason: None,
        }
    }

    fn token(id: &str) -> TokenRecord {
        TokenRecord {
            id: id.into(),
            secret_hash: vec![1; 32],
            spiffe_id: "spiffe://e.org/device/d".into(),
            created_at: 1,
            expires_at: 1000,
            used_at: None,
        }
    }

    #[test]
    fn a_token_is_redeemed_once_and_the_loser_stores_nothing() {
        let dir = std::env::temp_dir().join(format!("zg-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.db");
        let _ = std::fs::remove_file(&path);
        let store = SqliteStore::open(&path).unwrap();
        store.insert_token(&token("t1")).unwrap();
        store.redeem_token("t1", 50, &cert("10aa", "spiffe://e.org/device/d")).unwrap();
        let err = store.redeem_token("t1", 51, &cert("10bb", "spiffe://e.org/device/d")).unwrap_err();
        assert!(matches!(err, StoreError::TokenAlreadyUsed));
        assert!(matches!(store.redeem_token("nope", 51, &cert("10cc", "x")), Err(StoreError::UnknownToken)));
        assert!(store.certificate(&Serial::parse("10bb").unwrap()).unwrap().is_none(), "nothing half-stored");
        drop(store);
        // Reopened: the state is durable and the schema is not re-applied.
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.token("t1").unwrap().unwrap().used_at, Some(50));
        assert_eq!(store.certificates().unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn revocation_by_serial_and_identity() {
        let store = SqliteStore::in_memory().unwrap();
        store.insert_certificate(&cert("10aa", "spiffe://e.org/w/a")).unwrap();
        store.insert_certificate(&cert("10bb", "spiffe://e.org/w/b")).unwrap();
        store.insert_certificate(&cert("10cc", "spiffe://e.org/w/b")).unwrap();
        assert!(store.revoke_serial(&Serial::parse("10aa").unwrap(), 200, "key lost").unwrap());
        assert!(!store.revoke_serial(&Serial::parse("99").unwrap(), 200, "x").unwrap());
        assert_eq!(store.revoke_identity("spiffe://e.org/w/b", 300, "decommissioned").unwrap(), 2);
        let r = store.revocations().unwrap();
        assert_eq!(r.revoked_serials.len(), 3);
        assert!(r.list.identities.contains("spiffe://e.org/w/b"));
        let a = store.certificate(&Serial::parse("10aa").unwrap()).unwrap().unwrap();
        assert_eq!((a.revoked_at, a.revocation_reason.as_deref()), (Some(200), Some("key lost")));
        assert_eq!(store.next_crl_number().unwrap(), 1);
        assert_eq!(store.next_crl_number().unwrap(), 2);
    }

    #[test]
    fn revoked_credentials_and_principals_are_kept_once_and_survive_reopening() {
        let dir = std::env::temp_dir().join(format!("zerogate-store-{}-revoked", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("store.db");
        {
            let store = SqliteStore::open(&path).unwrap();
            assert!(store.revoke_access(RevokedKind::Credential, "jti:t-1", 10, "leaked").unwrap());
            assert!(!store.revoke_access(RevokedKind::Credential, "jti:t-1", 20, "again").unwrap(), "once");
            assert!(store.revoke_access(RevokedKind::Principal, r#"Zerogate::User::"alice""#, 30, "left").unwrap());
            // The same text as another kind is another revocation.
            assert!(store.revoke_access(RevokedKind::Principal, "jti:t-1", 40, "odd").unwrap());
        }
        let store = SqliteStore::open(&path).unwrap();
        let kept: Vec<_> = store.revoked_access().unwrap().into_iter().map(|r| (r.kind, r.id, r.revoked_at)).collect();
        assert_eq!(
            kept,
            vec![
                (RevokedKind::Credential, "jti:t-1".to_owned(), 10),
                (RevokedKind::Principal, r#"Zerogate::User::"alice""#.to_owned(), 30),
                (RevokedKind::Principal, "jti:t-1".to_owned(), 40),
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn access_keys_are_kept_listed_and_revoked_once() {
        let store = SqliteStore::in_memory().unwrap();
        let key = AccessKeyRecord {
            id: "AKZGAAAAAAAAAAAAAAAA".into(),
            secret: "s3cr3t".into(),
            client: "ci".into(),
            created_at: 10,
            revoked_at: None,
        };
        store.insert_access_key(&key).unwrap();
        assert!(store.insert_access_key(&key).is_err(), "ids are unique");
        assert_eq!(store.access_keys().unwrap(), vec![key.clone()]);
        assert!(!format!("{key:?}").contains("s3cr3t"), "Debug hides the secret");
        assert!(store.revoke_access_key(&key.id, 20).unwrap());
        assert!(!store.revoke_access_key(&key.id, 30).unwrap(), "already revoked");
        assert_eq!(store.access_keys().unwrap()[0].revoked_at, Some(20));
    }

    #[test]
    fn events_keep_hostile_text_intact() {
        let store = SqliteStore::in_memory().unwrap();
        for i in 0..5 {
            store
                .record_event(&Event {
                    at: i,
                    action: "enroll".into(),
                    subject: format!("x\n\0'; DROP TABLE events; --{i}"),
                    outcome: "refused".into(),
                    detail: "token expired".into(),
                    peer: Some("127.0.0.1:5000".into()),
                })
                .unwrap();
        }
        let events = store.events(3).unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].at, 2);
        assert!(events[2].subject.ends_with("--4"));
    }
}
