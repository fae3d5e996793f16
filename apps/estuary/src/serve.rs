//! Builds the chat application and push API from the configuration.

use anyhow::Context as _;

use estuary::InMemoryChannelLayer;
use estuary::prelude::*;
use estuary::server::{
    AllowedHostsService, AuthService, OriginLayer, OriginService, RouterService, TlsFiles,
};
use tower::Layer as _;

use crate::access::AccessLayer;
use crate::announce::Announcer;
use crate::auth::AppAuth;
use crate::chat::{ChatConsumer, ChatShared};
use crate::config::{Bind, Config, MetricsAt, RedisFlavour, redact_url};
use crate::metrics::{HttpStats, LayerOps, LayerProbe, Metrics, TimedLayer};
use crate::online::Online;
use crate::push::{PushAccess, PushState, routes as push_routes};
use crate::rooms::Rooms;

/// The application: the relayed routes of `[[routes]]`, then the chat (pages,
/// WebSocket rooms) and the push API.
pub fn router(config: &Config, layer: ChannelLayerHandle) -> anyhow::Result<Router> {
    let chat = ChatShared {
        rooms: Rooms::default(),
        announcer: Announcer::new(layer.clone()),
        online: Online::new(layer.clone(), config.chat.leave_delay()),
        recent_history: config.chat.recent_history,
    };
    let push = PushState {
        layer: layer.clone(),
        rooms: chat.rooms.clone(),
        online: chat.online.clone(),
        access: PushAccess::from_config(config),
        max_body: config.websocket.max_event_size,
    };
    let mut router = Router::new()
        .with_channel_layer(layer)
        .with_settings(config.websocket.ws_settings());
    // The configured routes first: the first route that matches serves.
    for (at, route) in config.routes.iter().enumerate() {
        let relay = route
            .relay()
            .with_context(|| format!("routes[{at}] ({})", route.path))?;
        router = router.websocket(&route.path, relay.factory());
    }
    Ok(router
        .websocket("ws/chat/<str:room>/", move || ChatConsumer::new(chat.clone()))
        .merge(crate::pages::routes())
        .merge(push_routes(push)))
}

/// The in-memory channel layer with the configured settings (presence and
/// history included).
pub fn in_memory_layer(config: &Config) -> anyhow::Result<ChannelLayerHandle> {
    Ok(ChannelLayerHandle::new(InMemoryChannelLayer::new(
        config.layer_config()?,
    )))
}

/// The configured channel layer: Redis of `layer.flavour` when hosts are
/// given, else in-memory, with `[presence]` and `[history]`. Must be
/// called inside the runtime (the Redis layer starts its tasks).
pub fn channel_layer(config: &Config) -> anyhow::Result<ChannelLayerHandle> {
    config.channel_layer()
}

/// The configured channel layer as [`channel_layer`] makes it, kept by its
/// type so that its counters can be read ([`LayerProbe::handle`] gives the
/// handle the server runs on). Must be called inside the runtime.
pub fn layer_probe(config: &Config) -> anyhow::Result<LayerProbe> {
    let layer_config = config.layer_config()?;
    if config.layer.redis.is_empty() {
        return Ok(LayerProbe::Memory(InMemoryChannelLayer::new(layer_config)));
    }
    let redis = config.layer.redis_config().with_layer_config(layer_config);
    Ok(match config.layer.flavour {
        RedisFlavour::Core => LayerProbe::Redis(estuary::redis::RedisChannelLayer::new(redis)?),
        RedisFlavour::PubSub => LayerProbe::PubSub(estuary::redis::RedisPubSubChannelLayer::new(redis)?),
    })
}

fn describe(config: &Config) -> String {
    if config.layer.redis.is_empty() {
        "in-memory".into()
    } else {
        let encrypted = if config.layer.encryption_keys.is_empty() {
            ""
        } else {
            ", encrypted"
        };
        let hosts: Vec<_> = config.layer.redis.iter().map(|url| redact_url(url)).collect();
        format!(
            "redis {} {} (prefix {:?}{encrypted})",
            config.layer.flavour,
            hosts.join(","),
            config.layer.prefix
        )
    }
}

/// The origin check: origins on the allowed hosts, the configured origins,
/// and clients that send no `Origin` (not browsers).
pub fn origin_layer(config: &Config) -> anyhow::Result<OriginLayer> {
    Ok(OriginLayer::new(&config.allowed_origins)
        .or_allowed_hosts(&config.allowed_hosts()?)
        .allow_missing_origin())
}

/// The whole application as one service: the allowed-hosts check around the
/// origin check around authentication around the router.
pub type AppService = AllowedHostsService<OriginService<AuthService<RouterService>>>;

/// The whole application as one service, ready for [`Server::serve`]: the
/// configured channel layer, the routes, the origin check and the allowed
/// hosts. Must be called
/// inside the runtime (the Redis layer starts its tasks).
///
/// ```no_run
/// # async fn demo() -> anyhow::Result<()> {
/// use estuary::server::Server;
/// use estuary_cli::config::Config;
///
/// let service = estuary_cli::serve::service(&Config::default())?;
/// let server = Server::bind("127.0.0.1:0".parse()?).await?;
/// server.serve(service, std::future::pending::<()>()).await?;
/// # Ok(()) }
/// ```
pub fn service(config: &Config) -> anyhow::Result<AppService> {
    Ok(service_with_auth(config)?.0)
}

/// [`service`], and the authenticator in it (to connect it at startup
/// with [`AppAuth::ready`]).
pub fn service_with_auth(config: &Config) -> anyhow::Result<(AppService, AppAuth)> {
    let (service, auth, _) = assemble(config, channel_layer(config)?, &HttpStats::default())?;
    Ok((service, auth))
}

/// [`service`] on a channel layer made by the caller instead of the
/// configured one: for tests that keep the layer to read its counters (the
/// Redis pub/sub layer's reconnects, say).
///
/// ```no_run
/// # async fn demo() -> anyhow::Result<()> {
/// use estuary::ChannelLayerHandle;
/// use estuary::redis::{RedisConfig, RedisPubSubChannelLayer};
/// use estuary_cli::config::Config;
///
/// let layer = RedisPubSubChannelLayer::new(RedisConfig::new(["redis://127.0.0.1:6379/0"]))?;
/// let service = estuary_cli::serve::service_with_layer(&Config::default(), ChannelLayerHandle::new(layer.clone()))?;
/// # Ok(()) }
/// ```
pub fn service_with_layer(config: &Config, layer: ChannelLayerHandle) -> anyhow::Result<AppService> {
    Ok(assemble(config, layer, &HttpStats::default())?.0)
}

fn assemble(
    config: &Config,
    layer: ChannelLayerHandle,
    http: &HttpStats,
) -> anyhow::Result<(AppService, AppAuth, estuary::SessionStats)> {
    let hosts = config.allowed_hosts()?;
    let origins = origin_layer(config)?;
    let auth = AppAuth::from_config(config, http)?;
    let router = router(config, layer)?;
    let sessions = router.settings().session.stats.clone();
    let service: RouterService = router.into_service();
    Ok((
        hosts
            .layer()
            .layer(origins.layer(auth.layer(config)?.layer(service))),
        auth,
        sessions,
    ))
}

/// Serves `config` until SIGINT or SIGTERM.
///
/// Beside the WebSocket tier it runs the room-post worker
/// ([`crate::posts`]) on the same channel layer, drained on shutdown.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let probe = layer_probe(&config)?;
    let at = config.metrics.at()?;
    let ops = LayerOps::default();
    let untimed = probe.handle().context("the configured layer has a handle")?;
    // Timed only when the metrics are served: the wrapper costs a second
    // dynamic call on each layer operation.
    let layer = match at {
        MetricsAt::Off => untimed,
        MetricsAt::Main | MetricsAt::Admin(_) => {
            ChannelLayerHandle::new(TimedLayer::new(untimed, ops.clone()))
        }
    };
    let http = HttpStats::default();
    let (service, auth, sessions) = assemble(&config, layer.clone(), &http)?;
    auth.ready().await?;
    warn_about_openings(&config)?;
    let (workers, worker_stats) = crate::posts::workers();
    let tls = tls_files(&config)?;
    let server = listen_with(&config, tls.clone())?
        .with_workers(workers, layer)
        .on_refusal(crate::access::refused_early(http.clone(), config.log.access));
    let metrics = Metrics::new(server.stats(), sessions, probe, http, worker_stats).with_layer_ops(ops);
    let service = AccessLayer::new(metrics.clone(), at == MetricsAt::Main, config.log.access).layer(service);
    let admin = match at {
        MetricsAt::Admin(addr) => Some(serve_metrics(addr, metrics).await?),
        MetricsAt::Main => {
            tracing::info!("metrics at GET /metrics on the main port (metrics.listen = \"main\")");
            None
        }
        MetricsAt::Off => None,
    };
    // Before "listening": from then on, SIGTERM is a graceful shutdown (and
    // SIGHUP rereads the TLS files).
    let shutdown = shutdown_signal();
    if let Some(tls) = tls.clone() {
        reload_on_sighup(tls)?;
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    match server.local_addr() {
        Some(addr) => tracing::info!(
            "estuary listening on {scheme}://{addr}/chat/ (channel layer: {})",
            describe(&config)
        ),
        None if config.fd.is_some() || std::env::var_os("LISTEN_FDS").is_some() => tracing::info!(
            "estuary listening on an inherited Unix socket (channel layer: {})",
            describe(&config)
        ),
        None => {
            tracing::info!(bind = %config.bind, "estuary listening (channel layer: {})", describe(&config))
        }
    }
    server.serve(service, shutdown).await?;
    if let Some(admin) = admin {
        admin.abort();
    }
    tracing::info!("estuary stopped");
    Ok(())
}

/// Serves `GET /metrics` alone on `addr` (`metrics.listen = "HOST:PORT"`),
/// until the task is aborted.
async fn serve_metrics(
    addr: std::net::SocketAddr,
    metrics: Metrics,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let server = Server::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for metrics (metrics.listen)"))?;
    let router = Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move { crate::access::scrape(&metrics) }
        }),
    );
    tracing::info!("metrics at http://{addr}/metrics (metrics.listen)");
    Ok(tokio::spawn(async move {
        if let Err(error) = server.serve(router.into_service(), std::future::pending()).await {
            tracing::error!(%error, "the metrics listener failed; metrics are not served until restart (check the --metrics address, then restart)");
        }
    }))
}

/// The server `config` describes, listening (its `bind` address and
/// `server.listen_backlog`, or the socket the process inherited: see
/// [`crate::activation`]) but not yet accepting.
///
/// ```no_run
/// # async fn demo() -> anyhow::Result<()> {
/// use estuary_cli::config::Config;
///
/// let config = Config::default();
/// let server = estuary_cli::serve::listen(&config)?;
/// server.serve(estuary_cli::serve::service(&config)?, std::future::pending::<()>()).await?;
/// # Ok(()) }
/// ```
pub fn listen(config: &Config) -> anyhow::Result<Server> {
    listen_with(config, tls_files(config)?)
}

/// The certificate and key of `tls_cert` and `tls_key`, read (`None`
/// without them).
pub fn tls_files(config: &Config) -> anyhow::Result<Option<TlsFiles>> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles::load(cert, key)?)),
        _ => Ok(None),
    }
}

/// Rereads the TLS files on every SIGHUP (a renewal): the next handshake
/// uses them, open connections keep theirs; a pair that does not load is
/// logged and the previous one stays. Installs the handler now.
fn reload_on_sighup(tls: TlsFiles) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificate and key reloaded"),
                Err(error) => {
                    tracing::error!(%error, "SIGHUP: TLS reload failed; the previous certificate stays: fix the files (the error names which) and send SIGHUP again")
                }
            }
        }
    });
    Ok(())
}

/// [`listen`] with the TLS files already read.
fn listen_with(config: &Config, tls: Option<TlsFiles>) -> anyhow::Result<Server> {
    let mut server_config = config.server_config()?;
    server_config.tls = tls;
    if let Some(server) = crate::activation::inherited(config.fd)? {
        return Ok(server.with_config(server_config));
    }
    let backlog = config.server.listen_backlog;
    let server = match config.bind()? {
        Bind::Tcp(addr) => Server::bind_with_backlog(addr, backlog).map_err(|e| cannot_listen(e, &addr))?,
        Bind::Unix(path) => Server::bind_unix_with_backlog(&path, backlog)
            .map_err(|e| cannot_listen(e, &format!("unix:{}", path.display())))?,
    };
    Ok(server.with_config(server_config))
}

/// The error of a failed bind, with the address, and with what to do
/// when another process holds it.
fn cannot_listen(error: std::io::Error, addr: &dyn std::fmt::Display) -> anyhow::Error {
    if error.kind() == std::io::ErrorKind::AddrInUse {
        anyhow::anyhow!(
            "cannot listen on {addr}: the address is already in use (another estuary or daphne \
             still running?); stop it, or listen elsewhere with --bind HOST:PORT (or ESTUARY_BIND)"
        )
    } else {
        anyhow::Error::new(error).context(format!("cannot listen on {addr}"))
    }
}

/// Says at startup what the configuration leaves open.
fn warn_about_openings(config: &Config) -> anyhow::Result<()> {
    let hosts = config.allowed_hosts()?;
    if hosts.allows_any() {
        tracing::warn!(
            "allowed_hosts is \"*\": any Host is answered and any origin may open WebSockets; \
             only safe behind a proxy that checks Host; otherwise list this server's names in allowed_hosts"
        );
    } else {
        tracing::info!(hosts = ?hosts.patterns(), "answering to these hosts only (allowed_hosts)");
    }
    match PushAccess::from_config(config) {
        PushAccess::Insecure => tracing::warn!(
            "push API open to anyone who reaches this port (push_insecure); set push_token instead"
        ),
        PushAccess::Closed => tracing::info!(
            "push API closed: POST /api/... answers 403 until push_token (or push_insecure) is set"
        ),
        PushAccess::Token(_) => {}
    }
    let in_memory = config.layer.redis.is_empty();
    for (at, route) in config.routes.iter().enumerate() {
        for warning in route.warnings(at, in_memory) {
            tracing::warn!("{warning}");
        }
    }
    Ok(())
}
