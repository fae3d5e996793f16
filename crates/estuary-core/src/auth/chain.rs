//! Several authenticators asked in turn: the first that answers wins.

use std::sync::Arc;

use super::{Admission, AuthFuture, Authenticator, Handshake, ReadyFuture};

/// Authenticators asked in turn for each handshake: the first that
/// *answers* decides, the others are not asked.
///
/// # The order contract
///
/// Authenticators are asked in the order they were added with
/// [`AuthChain::then`], one at a time; the next is asked only once the one
/// before has finished. Each answer falls in one of two kinds:
///
/// * it **answers**: an [`Admission`] with a user (the credential it reads
///   is there and valid), or any [`AuthError`](super::AuthError) (refused,
///   closed, unavailable, a bad answer). That answer is the chain's, as it
///   is; later authenticators are not asked. An error never falls through:
///   a backend that is down gives 503, not a chance for the next one to let
///   the visitor in as someone else, or anonymous.
/// * it **passes**: an [`Admission`] without a user (no credential of its
///   kind in the handshake, or one that is not valid). The next is asked,
///   and the passing admission's groups and data are dropped.
///
/// The last authenticator's answer is the chain's whatever it is, an
/// anonymous admission included (with its groups and data). A chain with
/// no authenticator lets everyone in as anonymous.
///
/// A user let in keeps the recheck of the authenticator that let them in
/// ([`Authenticator::recheck`], or the one its admission carries): the
/// chain attaches it to the admission ([`Admission::recheck`]), and its own
/// `recheck` returns `None`. [`AuthChain::ready`] readies every
/// authenticator, in order, and stops at the first that fails.
///
/// ```
/// use estuary_core::User;
/// use estuary_core::auth::{Admission, AuthChain, AuthFuture, Authenticator, Handshake};
///
/// /// `Authorization: Bearer letmein` is alice; without it: "not mine".
/// struct Token;
/// impl Authenticator for Token {
///     fn authenticate<'a>(&'a self, handshake: Handshake<'a>) -> AuthFuture<'a> {
///         let user = (handshake.bearer_token() == Some("letmein")).then(|| User::new("1", "alice"));
///         Box::pin(async move { Ok(user.into()) })
///     }
/// }
///
/// /// `?guest=<name>` is a guest.
/// struct Guest;
/// impl Authenticator for Guest {
///     fn authenticate<'a>(&'a self, handshake: Handshake<'a>) -> AuthFuture<'a> {
///         let user = handshake.query_param("guest").map(|name| User::new(format!("guest.{name}"), name));
///         Box::pin(async move { Ok(user.into()) })
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// // The token decides when it is valid; otherwise the guest's name.
/// let chain = AuthChain::new().then(Token).then(Guest);
/// let uri = "/ws/chat/?guest=bob".parse().unwrap();
/// let headers = http::HeaderMap::new();
/// let admission = chain.authenticate(Handshake { uri: &uri, headers: &headers, client: None }).await.unwrap();
/// assert_eq!(admission.user.map(|u| u.name().to_owned()).as_deref(), Some("bob"));
/// # });
/// ```
#[derive(Clone, Default)]
pub struct AuthChain {
    links: Vec<Arc<dyn Authenticator>>,
}

impl std::fmt::Debug for AuthChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthChain")
            .field("len", &self.links.len())
            .finish_non_exhaustive()
    }
}

impl AuthChain {
    /// A chain that asks no one yet (everyone anonymous).
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks `authenticator` after those already in the chain.
    pub fn then(self, authenticator: impl Authenticator) -> Self {
        self.then_shared(Arc::new(authenticator))
    }

    /// Asks an authenticator shared with other code (or another chain)
    /// after those already in the chain.
    pub fn then_shared(mut self, authenticator: Arc<dyn Authenticator>) -> Self {
        self.links.push(authenticator);
        self
    }

    /// Asks `authenticator` after those already in the chain, for the
    /// handshakes `when` picks; for the others it passes (as if it found no
    /// credential of its kind), so the next is asked. For an authenticator
    /// that costs something per handshake (a connect callback) and that
    /// only some routes need.
    ///
    /// ```
    /// use estuary_core::User;
    /// use estuary_core::auth::{AuthChain, AuthFuture, Authenticator, Handshake};
    ///
    /// /// Lets everyone in as alice.
    /// struct Everyone;
    /// impl Authenticator for Everyone {
    ///     fn authenticate<'a>(&'a self, _: Handshake<'a>) -> AuthFuture<'a> {
    ///         Box::pin(async { Ok(User::new("1", "alice").into()) })
    ///     }
    /// }
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let chain = AuthChain::new().then_when(Everyone, |h: &Handshake<'_>| h.uri.path().starts_with("/ws/private/"));
    /// let headers = http::HeaderMap::new();
    /// let ask = |path: &'static str| {
    ///     let uri: http::Uri = path.parse().unwrap();
    ///     let chain = chain.clone();
    ///     let headers = headers.clone();
    ///     async move { chain.authenticate(Handshake { uri: &uri, headers: &headers, client: None }).await.unwrap().user }
    /// };
    /// assert!(ask("/ws/private/").await.is_some());
    /// assert!(ask("/ws/public/").await.is_none(), "not asked: anonymous");
    /// # });
    /// ```
    pub fn then_when<P>(self, authenticator: impl Authenticator, when: P) -> Self
    where
        P: Fn(&Handshake<'_>) -> bool + Send + Sync + 'static,
    {
        self.then(When {
            inner: Arc::new(authenticator),
            when,
        })
    }

    /// How many authenticators the chain asks.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// True when the chain asks no one (everyone is anonymous).
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }
}

impl Authenticator for AuthChain {
    fn authenticate<'a>(&'a self, handshake: Handshake<'a>) -> AuthFuture<'a> {
        Box::pin(async move {
            let Some((last, first)) = self.links.split_last() else {
                return Ok(Admission::anonymous());
            };
            for link in first {
                let admission = link.authenticate(handshake).await?;
                if admission.user.is_some() {
                    return Ok(with_recheck(link, handshake, admission));
                }
            }
            let admission = last.authenticate(handshake).await?;
            Ok(with_recheck(last, handshake, admission))
        })
    }

    fn ready(&self) -> ReadyFuture<'_> {
        Box::pin(async move {
            for link in &self.links {
                link.ready().await?;
            }
            Ok(())
        })
    }
}

/// An authenticator asked only for the handshakes its predicate picks
/// ([`AuthChain::then_when`]).
struct When<A, P> {
    inner: Arc<A>,
    when: P,
}

impl<A, P> Authenticator for When<A, P>
where
    A: Authenticator,
    P: Fn(&Handshake<'_>) -> bool + Send + Sync + 'static,
{
    fn authenticate<'a>(&'a self, handshake: Handshake<'a>) -> AuthFuture<'a> {
        if (self.when)(&handshake) {
            self.inner.authenticate(handshake)
        } else {
            Box::pin(async { Ok(Admission::anonymous()) })
        }
    }

    fn recheck(self: Arc<Self>, handshake: Handshake<'_>, user: &crate::User) -> Option<crate::Recheck> {
        // Only a user this authenticator let in is rechecked by it, and it
        // let in only handshakes its predicate picked.
        if (self.when)(&handshake) {
            Arc::clone(&self.inner).recheck(handshake, user)
        } else {
            None
        }
    }

    fn ready(&self) -> ReadyFuture<'_> {
        self.inner.ready()
    }
}

/// The admission of `link`, carrying `link`'s recheck for the user it let
/// in (unless it carries one already).
fn with_recheck(
    link: &Arc<dyn Authenticator>,
    handshake: Handshake<'_>,
    mut admission: Admission,
) -> Admission {
    if admission.recheck.is_none()
        && let Some(user) = &admission.user
    {
        admission.recheck = link.clone().recheck(handshake, user);
    }
    admission
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use http::{HeaderMap, StatusCode, Uri};

    use super::*;
    use crate::auth::AuthError;
    use crate::{Recheck, User};

    /// Answers what it was told, and notes that it was asked.
    struct Fixed {
        name: &'static str,
        answer: Answer,
        asked: Arc<Mutex<Vec<&'static str>>>,
        recheck_every: Option<u64>,
    }

    impl Authenticator for Fixed {
        fn authenticate<'a>(&'a self, _: Handshake<'a>) -> AuthFuture<'a> {
            self.asked.lock().unwrap().push(self.name);
            let answer = (self.answer)();
            Box::pin(async move { answer })
        }

        fn recheck(self: Arc<Self>, _: Handshake<'_>, _: &User) -> Option<Recheck> {
            let every = Duration::from_secs(self.recheck_every?);
            Some(Recheck::new(every, || async { Ok(true) }))
        }

        fn ready(&self) -> ReadyFuture<'_> {
            self.asked.lock().unwrap().push(self.name);
            let failed = self.name == "broken";
            Box::pin(async move {
                if failed {
                    return Err("not ready".into());
                }
                Ok(())
            })
        }
    }

    /// What a test authenticator answers.
    type Answer = fn() -> Result<Admission, AuthError>;

    const ALICE: Answer = || Ok(User::new("1", "alice").into());
    const BOB: Answer = || Ok(User::new("2", "bob").into());
    const NOBODY: Answer = || Ok(Admission::anonymous().with_data("from", "nobody"));
    const REFUSED: Answer = || {
        Err(AuthError::Refused {
            status: StatusCode::FORBIDDEN,
            reason: "no".into(),
        })
    };
    const DOWN: Answer = || Err(AuthError::Unavailable("down".into()));

    /// A chain of `(name, answer, recheck seconds)`, and what it asked.
    fn make(links: &[(&'static str, Answer, Option<u64>)]) -> (AuthChain, Arc<Mutex<Vec<&'static str>>>) {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let chain = links
            .iter()
            .fold(AuthChain::new(), |chain, &(name, answer, every)| {
                chain.then(Fixed {
                    name,
                    answer,
                    asked: asked.clone(),
                    recheck_every: every,
                })
            });
        (chain, asked)
    }

    async fn run(chain: &AuthChain) -> Result<Admission, AuthError> {
        let uri = Uri::from_static("/ws/");
        let headers = HeaderMap::new();
        chain
            .authenticate(Handshake {
                uri: &uri,
                headers: &headers,
                client: None,
            })
            .await
    }

    fn name(admission: &Admission) -> Option<&str> {
        admission.user.as_ref().map(User::name)
    }

    #[tokio::test]
    async fn the_first_that_lets_a_user_in_wins_and_the_rest_are_not_asked() {
        let (chain, asked) = make(&[("a", ALICE, None), ("b", BOB, None)]);
        assert_eq!(name(&run(&chain).await.unwrap()), Some("alice"));
        assert_eq!(*asked.lock().unwrap(), ["a"]);
    }

    #[tokio::test]
    async fn anonymous_passes_to_the_next_and_its_data_is_dropped() {
        let (chain, asked) = make(&[("a", NOBODY, None), ("b", BOB, None)]);
        let admission = run(&chain).await.unwrap();
        assert_eq!(name(&admission), Some("bob"));
        assert!(
            admission.data.is_empty(),
            "the passing admission's data is dropped"
        );
        assert_eq!(*asked.lock().unwrap(), ["a", "b"]);
    }

    #[tokio::test]
    async fn the_last_answer_stands_even_anonymous() {
        let (chain, asked) = make(&[("a", NOBODY, None), ("b", NOBODY, None)]);
        let admission = run(&chain).await.unwrap();
        assert_eq!(name(&admission), None);
        assert_eq!(
            admission.data.get("from"),
            Some(&"nobody".into()),
            "the last one's data is kept"
        );
        assert_eq!(*asked.lock().unwrap(), ["a", "b"]);
    }

    #[tokio::test]
    async fn an_error_answers_and_never_falls_through() {
        let (chain, asked) = make(&[("a", REFUSED, None), ("b", BOB, None)]);
        assert!(matches!(run(&chain).await, Err(AuthError::Refused { .. })));
        assert_eq!(*asked.lock().unwrap(), ["a"]);
        let (chain, asked) = make(&[("a", NOBODY, None), ("b", DOWN, None), ("c", BOB, None)]);
        assert!(matches!(run(&chain).await, Err(AuthError::Unavailable(_))));
        assert_eq!(*asked.lock().unwrap(), ["a", "b"]);
    }

    #[tokio::test]
    async fn an_empty_chain_lets_everyone_in_as_anonymous() {
        assert_eq!(run(&AuthChain::new()).await.unwrap(), Admission::anonymous());
    }

    #[tokio::test]
    async fn the_recheck_is_the_one_of_the_authenticator_that_let_the_user_in() {
        let (chain, _) = make(&[("a", ALICE, None), ("b", BOB, Some(30))]);
        assert_eq!(run(&chain).await.unwrap().recheck, None, "a has no recheck");
        let (chain, _) = make(&[("a", NOBODY, Some(10)), ("b", BOB, Some(30))]);
        let recheck = run(&chain).await.unwrap().recheck.expect("b's recheck");
        assert_eq!(recheck.every(), Duration::from_secs(30));
        let (chain, _) = make(&[("a", NOBODY, Some(10))]);
        assert_eq!(run(&chain).await.unwrap().recheck, None, "none without a user");
    }

    #[tokio::test]
    async fn chains_nest_and_keep_the_inner_recheck() {
        let (inner, _) = make(&[("a", NOBODY, None), ("b", BOB, Some(30))]);
        let outer = AuthChain::new().then(inner).then(Fixed {
            name: "c",
            answer: ALICE,
            asked: Arc::default(),
            recheck_every: Some(5),
        });
        let admission = run(&outer).await.unwrap();
        assert_eq!(name(&admission), Some("bob"));
        assert_eq!(
            admission.recheck.map(|r| r.every()),
            Some(Duration::from_secs(30))
        );
    }

    #[tokio::test]
    async fn ready_readies_every_one_in_order_and_stops_at_the_first_failure() {
        let (chain, asked) = make(&[("a", ALICE, None), ("broken", BOB, None), ("c", BOB, None)]);
        assert!(chain.ready().await.is_err());
        assert_eq!(*asked.lock().unwrap(), ["a", "broken"]);
        let (chain, asked) = make(&[("a", ALICE, None), ("c", BOB, None)]);
        chain.ready().await.unwrap();
        assert_eq!(*asked.lock().unwrap(), ["a", "c"]);
    }

    #[tokio::test]
    async fn a_conditional_link_is_asked_only_where_its_predicate_holds_and_keeps_its_recheck() {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let fixed = |name, answer, every| Fixed {
            name,
            answer,
            asked: asked.clone(),
            recheck_every: every,
        };
        let on = AuthChain::new()
            .then_when(fixed("a", ALICE, Some(5)), |h: &Handshake<'_>| {
                h.uri.path() == "/ws/"
            })
            .then(fixed("b", BOB, None));
        let admission = run(&on).await.unwrap();
        assert_eq!(name(&admission), Some("alice"));
        assert_eq!(admission.recheck.map(|r| r.every()), Some(Duration::from_secs(5)));
        let off = AuthChain::new()
            .then_when(fixed("c", ALICE, Some(5)), |h: &Handshake<'_>| {
                h.uri.path() == "/elsewhere/"
            })
            .then(fixed("d", BOB, None));
        assert_eq!(name(&run(&off).await.unwrap()), Some("bob"));
        assert_eq!(*asked.lock().unwrap(), ["a", "d"], "c was not asked");
        off.ready().await.unwrap();
        assert_eq!(
            asked.lock().unwrap().last(),
            Some(&"d"),
            "ready reaches every link"
        );
    }
}
