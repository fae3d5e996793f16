//! The two databases Django projects run on here, behind one internal enum.

mod postgres;
mod sqlite;

use crate::{DatabaseUrl, DjangoError, UserModel};

/// One row of `django_session`: the signed data and `expire_date` in Unix seconds.
#[derive(Debug)]
pub(crate) struct SessionRow {
    pub(crate) session_data: String,
    pub(crate) expire_epoch: f64,
}

/// The columns read from the user table.
#[derive(Debug)]
pub(crate) struct UserRow {
    pub(crate) id: String,
    pub(crate) username: String,
    pub(crate) password: String,
    pub(crate) is_active: bool,
    pub(crate) is_staff: bool,
    pub(crate) is_superuser: bool,
    pub(crate) attributes: serde_json::Map<String, serde_json::Value>,
}

pub(crate) enum Database {
    Postgres(Box<postgres::Postgres>),
    Sqlite(sqlite::Sqlite),
}

impl Database {
    pub(crate) async fn connect(
        url: &DatabaseUrl,
        model: &UserModel,
        sessions_table: bool,
    ) -> Result<Self, DjangoError> {
        let sql = Sql::new(model);
        Ok(match url {
            DatabaseUrl::Postgres(url) => Self::Postgres(Box::new(
                postgres::Postgres::connect(url, sql, sessions_table).await?,
            )),
            DatabaseUrl::Sqlite(path) => {
                Self::Sqlite(sqlite::Sqlite::open(path.clone(), sql, sessions_table).await?)
            }
        })
    }

    pub(crate) async fn session(&self, key: &str) -> Result<Option<SessionRow>, DjangoError> {
        match self {
            Self::Postgres(db) => db.session(key).await,
            Self::Sqlite(db) => db.session(key).await,
        }
    }

    pub(crate) async fn user(&self, id: &str) -> Result<Option<UserRow>, DjangoError> {
        match self {
            Self::Postgres(db) => db.user(id).await,
            Self::Sqlite(db) => db.user(id).await,
        }
    }
}

/// The pieces of the user query; names were validated as identifiers before.
pub(crate) struct Sql {
    pub(crate) table: String,
    pub(crate) pk: String,
    pub(crate) username: String,
    pub(crate) password: String,
    pub(crate) is_active: Option<String>,
    pub(crate) is_staff: Option<String>,
    pub(crate) is_superuser: Option<String>,
    pub(crate) attributes: Vec<String>,
}

impl Sql {
    fn new(model: &UserModel) -> Self {
        let quote = |name: &str| format!("\"{name}\"");
        Self {
            table: quote(&model.table),
            pk: quote(&model.pk_column),
            username: quote(&model.username_column),
            password: quote(&model.password_column),
            is_active: model.is_active_column.as_deref().map(quote),
            is_staff: model.is_staff_column.as_deref().map(quote),
            is_superuser: model.is_superuser_column.as_deref().map(quote),
            attributes: model.attribute_columns.clone(),
        }
    }
}
