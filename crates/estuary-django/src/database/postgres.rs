//! PostgreSQL: one shared `tokio-postgres` client (queries pipeline over it),
//! reconnected on the next lookup after it breaks.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, Statement};

use super::{SessionRow, Sql, UserRow};
use crate::{DjangoConfigError, DjangoError};

const BACKEND: &str = "postgresql";
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// How the primary key is bound: Postgres wants the exact integer width.
#[derive(Clone, Copy)]
enum PkKind {
    Int2,
    Int4,
    Int8,
    /// Text, or anything cast from text in the query (UUID).
    Text,
}

struct Conn {
    client: Client,
    session: Option<Statement>,
    user: Statement,
    pk: PkKind,
}

pub(crate) struct Postgres {
    config: tokio_postgres::Config,
    sql: Sql,
    sessions_table: bool,
    /// The live connection; the lock is held only while (re)connecting.
    conn: Mutex<Option<Arc<Conn>>>,
}

impl Postgres {
    pub(crate) async fn connect(url: &str, sql: Sql, sessions_table: bool) -> Result<Self, DjangoError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(DjangoConfigError::postgres_url)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        let db = Self {
            config,
            sql,
            sessions_table,
            conn: Mutex::new(None),
        };
        // Connect now, so that a wrong URL or a missing table shows at start-up.
        db.conn().await?;
        Ok(db)
    }

    async fn conn(&self) -> Result<Arc<Conn>, DjangoError> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            if !conn.client.is_closed() {
                return Ok(conn.clone());
            }
        }
        *slot = None;
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| DjangoError::db(BACKEND, "connect", e))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                // A flapping database ends a connection per lookup: one line a
                // second at most.
                estuary_core::throttled!(
                    warn,
                    %error,
                    "the Django PostgreSQL connection ended; the next handshake reconnects (check the database \
                     server and the network if this repeats; held_back: lines held back since the last)"
                );
            }
        });
        let session = if self.sessions_table {
            let sql = "SELECT session_data, EXTRACT(EPOCH FROM expire_date)::float8 \
                       FROM django_session WHERE session_key = $1";
            Some(
                client
                    .prepare(sql)
                    .await
                    .map_err(|e| DjangoError::db(BACKEND, "prepare the session lookup", e))?,
            )
        } else {
            None
        };
        let (user, pk) = self.prepare_user(&client).await?;
        let conn = Arc::new(Conn {
            client,
            session,
            user,
            pk,
        });
        *slot = Some(conn.clone());
        Ok(conn)
    }

    fn user_sql(&self, pk_param: &str) -> String {
        let s = &self.sql;
        let flag = |column: &Option<String>, default: &str| match column {
            Some(column) => format!("{column}::boolean"),
            None => default.to_owned(),
        };
        let mut columns = vec![
            format!("{}::text", s.pk),
            format!("{}::text", s.username),
            format!("{}::text", s.password),
            flag(&s.is_active, "TRUE"),
            flag(&s.is_staff, "FALSE"),
            flag(&s.is_superuser, "FALSE"),
        ];
        columns.extend(s.attributes.iter().map(|a| format!("to_json(\"{a}\")::text")));
        format!(
            "SELECT {} FROM {} WHERE {} = {pk_param}",
            columns.join(", "),
            s.table,
            s.pk
        )
    }

    async fn prepare_user(&self, client: &Client) -> Result<(Statement, PkKind), DjangoError> {
        let err = |e| DjangoError::db(BACKEND, "prepare the user lookup", e);
        let statement = client.prepare(&self.user_sql("$1")).await.map_err(err)?;
        let param = statement.params().first().cloned().unwrap_or(Type::TEXT);
        let kind = match param {
            Type::INT2 => PkKind::Int2,
            Type::INT4 => PkKind::Int4,
            Type::INT8 => PkKind::Int8,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => PkKind::Text,
            other => {
                // A UUID (or other) key: cast the text id in the query. The type name
                // comes from the server's catalogue; it is still checked to be plain.
                let name = other.name();
                if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return Err(DjangoConfigError::unsupported_primary_key(name).into());
                }
                let sql = self.user_sql(&format!("CAST($1::text AS {name})"));
                return Ok((client.prepare(&sql).await.map_err(err)?, PkKind::Text));
            }
        };
        Ok((statement, kind))
    }

    /// Drops `conn` from the slot (if it is still the one there), so that the
    /// next lookup connects afresh even before the client notices the close.
    async fn forget(&self, conn: &Arc<Conn>) {
        let mut slot = self.conn.lock().await;
        if slot.as_ref().is_some_and(|current| Arc::ptr_eq(current, conn)) {
            *slot = None;
        }
    }

    /// Runs `query` on the live connection; if the connection turned out to be broken,
    /// reconnects once and retries.
    async fn with_retry<T, F, Fut>(&self, operation: &'static str, query: F) -> Result<T, DjangoError>
    where
        F: Fn(Arc<Conn>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let mut retried = false;
        loop {
            let conn = self.conn().await?;
            let outcome = tokio::time::timeout(QUERY_TIMEOUT, query(conn.clone())).await;
            match outcome {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) if broken(&conn, &e) && !retried => {
                    estuary_core::throttled!(
                        warn,
                        error = %e,
                        "the Django PostgreSQL connection broke; reconnecting (check the database server and \
                         the network if this repeats; held_back: lines held back since the last)"
                    );
                    self.forget(&conn).await;
                    retried = true;
                }
                Ok(Err(e)) => return Err(DjangoError::db(BACKEND, operation, e)),
                Err(_) => {
                    return Err(DjangoError::db(
                        BACKEND,
                        operation,
                        format!("no answer within {QUERY_TIMEOUT:?}"),
                    ));
                }
            }
        }
    }

    pub(crate) async fn session(&self, key: &str) -> Result<Option<SessionRow>, DjangoError> {
        self.with_retry("session lookup", |conn| async move {
            let Some(statement) = conn.session.as_ref() else {
                return Ok(None);
            };
            let row = conn.client.query_opt(statement, &[&key]).await?;
            row.map(|row| {
                Ok(SessionRow {
                    session_data: row.try_get(0)?,
                    expire_epoch: row.try_get(1)?,
                })
            })
            .transpose()
        })
        .await
    }

    pub(crate) async fn user(&self, id: &str) -> Result<Option<UserRow>, DjangoError> {
        let attributes = &self.sql.attributes;
        self.with_retry("user lookup", |conn| async move {
            // An id that is not of the key's type matches no row, as in Django.
            let (i2, i4, i8): (Option<i16>, Option<i32>, Option<i64>) = match conn.pk {
                PkKind::Int2 => (id.parse().ok(), None, None),
                PkKind::Int4 => (None, id.parse().ok(), None),
                PkKind::Int8 => (None, None, id.parse().ok()),
                PkKind::Text => (None, None, None),
            };
            let param: &(dyn ToSql + Sync) = match conn.pk {
                PkKind::Int2 => match &i2 {
                    Some(v) => v,
                    None => return Ok(None),
                },
                PkKind::Int4 => match &i4 {
                    Some(v) => v,
                    None => return Ok(None),
                },
                PkKind::Int8 => match &i8 {
                    Some(v) => v,
                    None => return Ok(None),
                },
                PkKind::Text => &id,
            };
            let row = match conn.client.query_opt(&conn.user, &[param]).await {
                Ok(row) => row,
                // A text id that is not a valid UUID is refused by the cast: no such user.
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_TEXT_REPRESENTATION) => {
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            let Some(row) = row else { return Ok(None) };
            let mut map = serde_json::Map::new();
            for (i, name) in attributes.iter().enumerate() {
                let json: Option<String> = row.try_get(6 + i)?;
                let value = json
                    .and_then(|text| serde_json::from_str(&text).ok())
                    .unwrap_or(serde_json::Value::Null);
                map.insert(name.clone(), value);
            }
            Ok(Some(UserRow {
                id: row.try_get::<_, Option<String>>(0)?.unwrap_or_default(),
                username: row.try_get::<_, Option<String>>(1)?.unwrap_or_default(),
                password: row.try_get::<_, Option<String>>(2)?.unwrap_or_default(),
                is_active: row.try_get::<_, Option<bool>>(3)?.unwrap_or(false),
                is_staff: row.try_get::<_, Option<bool>>(4)?.unwrap_or(false),
                is_superuser: row.try_get::<_, Option<bool>>(5)?.unwrap_or(false),
                attributes: map,
            }))
        })
        .await
    }
}

/// Whether `error` means the connection is gone: the client saw it close, or
/// the server said it is terminating the session (an administrator, a
/// shutdown, a failover), which can arrive before the close itself.
fn broken(conn: &Conn, error: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    conn.client.is_closed()
        || error.is_closed()
        || error.code().is_some_and(|code| {
            [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
            ]
            .contains(code)
        })
}
