//! SQLite: one read-only connection, used from the blocking pool.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::{SessionRow, Sql, UserRow};
use crate::DjangoError;

const BACKEND: &str = "sqlite";

pub(crate) struct Sqlite {
    conn: Arc<Mutex<Connection>>,
    session_sql: Arc<str>,
    user_sql: Arc<str>,
    attributes: Arc<[String]>,
}

impl Sqlite {
    pub(crate) async fn open(path: PathBuf, sql: Sql, sessions_table: bool) -> Result<Self, DjangoError> {
        let flag = |column: &Option<String>, default: &str| match column {
            Some(column) => format!("COALESCE({column}, 0)"),
            None => default.to_owned(),
        };
        let mut columns = vec![
            format!("CAST({} AS TEXT)", sql.pk),
            format!("CAST({} AS TEXT)", sql.username),
            format!("CAST({} AS TEXT)", sql.password),
            flag(&sql.is_active, "1"),
            flag(&sql.is_staff, "0"),
            flag(&sql.is_superuser, "0"),
        ];
        columns.extend(sql.attributes.iter().map(|a| format!("\"{a}\"")));
        let user_sql: Arc<str> = format!(
            "SELECT {} FROM {} WHERE {} = ?1",
            columns.join(", "),
            sql.table,
            sql.pk
        )
        .into();
        // Django stores expire_date as UTC text ("YYYY-MM-DD HH:MM:SS.ffffff").
        let session_sql: Arc<str> = "SELECT session_data, \
             (julianday(expire_date) - 2440587.5) * 86400.0 \
             FROM django_session WHERE session_key = ?1"
            .into();
        let (user_check, session_check) = (user_sql.clone(), session_sql.clone());
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, DjangoError> {
            let err = |op| move |e| DjangoError::db(BACKEND, op, e);
            let conn = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(err("open"))?;
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(err("open"))?;
            // Prepare both now, so that a missing table or column shows at start-up.
            conn.prepare_cached(&user_check)
                .map_err(err("prepare the user lookup"))?;
            if sessions_table {
                conn.prepare_cached(&session_check)
                    .map_err(err("prepare the session lookup"))?;
            }
            Ok(conn)
        })
        .await
        .map_err(|e| DjangoError::db(BACKEND, "open", e))??;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            session_sql,
            user_sql,
            attributes: sql.attributes.into(),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        operation: &'static str,
        job: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, DjangoError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A panic elsewhere while holding the lock leaves a usable connection.
            let guard = estuary_core::sync::lock(&conn);
            job(&guard)
        })
        .await
        .map_err(|e| DjangoError::db(BACKEND, operation, e))?
        .map_err(|e| DjangoError::db(BACKEND, operation, e))
    }

    pub(crate) async fn session(&self, key: &str) -> Result<Option<SessionRow>, DjangoError> {
        let (sql, key) = (self.session_sql.clone(), key.to_owned());
        self.run("session lookup", move |conn| {
            conn.prepare_cached(&sql)?
                .query_row([key], |row| {
                    Ok(SessionRow {
                        session_data: row.get(0)?,
                        expire_epoch: row.get::<_, Option<f64>>(1)?.unwrap_or(0.0),
                    })
                })
                .optional()
        })
        .await
    }

    pub(crate) async fn user(&self, id: &str) -> Result<Option<UserRow>, DjangoError> {
        let (sql, id, attributes) = (self.user_sql.clone(), id.to_owned(), self.attributes.clone());
        self.run("user lookup", move |conn| {
            conn.prepare_cached(&sql)?
                .query_row([id], |row| {
                    let mut map = serde_json::Map::new();
                    for (i, name) in attributes.iter().enumerate() {
                        map.insert(name.clone(), to_json(row.get(6 + i)?));
                    }
                    Ok(UserRow {
                        id: row.get::<_, Option<String>>(0)?.unwrap_or_default(),
                        username: row.get::<_, Option<String>>(1)?.unwrap_or_default(),
                        password: row.get::<_, Option<String>>(2)?.unwrap_or_default(),
                        is_active: truthy(row.get(3)?),
                        is_staff: truthy(row.get(4)?),
                        is_superuser: truthy(row.get(5)?),
                        attributes: map,
                    })
                })
                .optional()
        })
        .await
    }
}

fn truthy(value: Value) -> bool {
    match value {
        Value::Integer(i) => i != 0,
        Value::Real(f) => f != 0.0,
        Value::Text(t) => matches!(t.as_str(), "1" | "true" | "True" | "t"),
        Value::Null | Value::Blob(_) => false,
    }
}

fn to_json(value: Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Integer(i) => i.into(),
        Value::Real(f) => serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, Into::into),
        Value::Text(t) => t.into(),
        Value::Blob(_) => serde_json::Value::Null,
    }
}
