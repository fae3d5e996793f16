//! The user a valid session belongs to.

/// A Django user, read from the user table after the session and its auth hash
/// checked out. Only active users are returned (unless the backend allows all).
///
/// ```
/// use estuary_django::DjangoUser;
/// let user = DjangoUser {
///     id: "7".into(),
///     username: "alice".into(),
///     is_staff: false,
///     is_superuser: false,
///     attributes: serde_json::Map::new(),
/// };
/// assert_eq!(user.username, "alice");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DjangoUser {
    /// The primary key, as text (`"7"`, or a UUID).
    pub id: String,
    /// The `USERNAME_FIELD` value.
    pub username: String,
    /// `is_staff` (`false` if the model has no such column).
    pub is_staff: bool,
    /// `is_superuser` (`false` if the model has no such column).
    pub is_superuser: bool,
    /// The configured extra columns (by default `first_name`, `last_name`, `email`), as
    /// the database gives them; SQL `NULL` is JSON `null`.
    pub attributes: serde_json::Map<String, serde_json::Value>,
}
