//! What an authenticator decided for a handshake it lets in.

use crate::{GroupName, Recheck, User};

/// What an [`Authenticator`](super::Authenticator) decided for a handshake it lets in: the user
/// (`None`: an anonymous visitor), the groups the connection joins before
/// the consumer's `connect` runs ([`Scope::initial_groups`](crate::Scope::initial_groups)),
/// and data for its scope ([`Scope::data`](crate::Scope::data)).
/// An authenticator that only says who the user is converts its answer
/// with `.into()`. A [`Recheck`] attached with [`Admission::with_recheck`]
/// is run while the user's connection is open, in place of
/// [`Authenticator::recheck`](super::Authenticator::recheck).
///
/// ```
/// use estuary_core::{GroupName, User};
/// use estuary_core::auth::Admission;
///
/// let admission = Admission::from(User::new("42", "alice"))
///     .join(GroupName::new("user.42").unwrap())
///     .with_data("tenant", "acme");
/// assert_eq!(admission.user.as_ref().map(User::name), Some("alice"));
/// assert!(Admission::from(None::<User>).user.is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Admission {
    /// Who is connecting; `None` for an anonymous visitor.
    pub user: Option<User>,
    /// Groups the connection joins before `connect`, and leaves at the end.
    pub groups: Vec<GroupName>,
    /// Data put in the scope for the consumer to read.
    pub data: serde_json::Map<String, serde_json::Value>,
    /// The check repeated while the user's connection is open (ignored
    /// without a user).
    pub recheck: Option<Recheck>,
}

impl Admission {
    /// An anonymous visitor, in no group, with no data.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// Adds a group to join.
    pub fn join(mut self, group: GroupName) -> Self {
        self.groups.push(group);
        self
    }

    /// Attaches the check to repeat while the user's connection is open.
    pub fn with_recheck(mut self, recheck: Recheck) -> Self {
        self.recheck = Some(recheck);
        self
    }

    /// Adds an entry to the scope's data.
    pub fn with_data(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.data.insert(key.into(), value.into());
        self
    }
}

impl From<User> for Admission {
    fn from(user: User) -> Self {
        Self {
            user: Some(user),
            ..Self::default()
        }
    }
}

impl From<Option<User>> for Admission {
    fn from(user: Option<User>) -> Self {
        Self {
            user,
            ..Self::default()
        }
    }
}
