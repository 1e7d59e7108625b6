//! The evergreen model server: TensorFlow Serving's v1 REST API over a registry of immutable,
//! numbered versions, with hot reload.
//!
//! Each configured model has a base directory holding numbered version directories (TF
//! Serving's `--model_base_path`). A watcher lists every base directory each `poll_interval`,
//! loads (and verifies) new versions off the async runtime, and swaps an immutable
//! snapshot of loaded versions into place atomically. A request loads the snapshot
//! once when it starts and finishes on the version it started with, so a swap never fails or
//! mixes a request. A version that fails to load is logged, counted and never replaces a
//! working one. The routes and shapes are documented in `docs/rest-api.md`.

mod admin;
mod api;
mod batching;
mod error;
pub mod feedback;
pub mod grpc;
mod json;
mod model_config;
mod state;
mod warmup;

pub use admin::{AdminAction, AdminAudit, AdminOptions};
pub use batching::{BATCHING_PARAMS_FILE, BatchingParameters, parse_batching_parameters};
use evergreen_metrics::Metrics;
pub use model_config::parse_model_config;
use state::ModelState;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Parses a TF Serving warm-up file (`assets.extra/tf_serving_warmup_requests`: TFRecord of
/// `PredictionLog`, at most `max` records) into the records of each request, exactly as a
/// version's warm-up reads it; the error names the record. Exposed for the fuzz target.
pub fn parse_tf_warmup_file(
    bytes: &[u8],
    max: usize,
) -> Result<Vec<Vec<evergreen_core::RawRecord>>, String> {
    warmup::requests(bytes, max).map(|r| r.into_iter().map(|(_, records)| records).collect())
}

/// Largest number of instances (or examples) one request may carry.
pub const MAX_BATCH: usize = 10_000;

/// Parses a `:predict` request body (row or columnar) into raw records exactly as the server
/// does before transforming them with the served version's feature spec. Exposed so that tests
/// can prove training-time and serving-time feature vectors are identical.
pub fn parse_predict_records(body: &[u8]) -> Result<Vec<evergreen_core::RawRecord>, String> {
    json::predict_request(body, None)
        .map(|(_, records)| records)
        .map_err(|e| e.to_string())
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Response header naming the version that answered a request.
pub const VERSION_HEADER: &str = "x-evergreen-model-version";

/// One served model: its name and the directory holding its numbered versions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelSource {
    /// Model name, as used in request paths (`/v1/models/<name>`).
    pub name: String,
    /// Directory holding the numbered version directories (TF Serving's `--model_base_path`).
    /// It need not exist yet: the model then has no version until one appears.
    pub base_path: PathBuf,
    /// Which versions to serve; `None`: the newest [`ServeOptions::num_versions`].
    pub policy: Option<VersionPolicy>,
    /// Version labels from a model config file; `labels.json` entries override them.
    pub labels: BTreeMap<String, u64>,
}

/// TF Serving's `model_version_policy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionPolicy {
    /// The newest N versions that load.
    Latest(usize),
    /// Every version on disk.
    All,
    /// These versions (those on disk).
    Specific(Vec<u64>),
}

/// Server settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeOptions {
    /// The models to serve.
    pub models: Vec<ModelSource>,
    /// How often the watcher lists every base directory (default 200 ms).
    pub poll_interval: Duration,
    /// Largest accepted request body in bytes (default 4 MiB); larger bodies get 413.
    pub max_body_bytes: usize,
    /// Version policy "latest N" (default 1): serve the newest N loadable versions (plus any
    /// version named by a label in `labels.json`).
    pub num_versions: usize,
    /// The admin API (`/admin/v1/...`); `None` disables it.
    pub admin: Option<AdminOptions>,
    /// Longest a REST request may take, reading its body included (default 30 s); slower ones
    /// get 408.
    pub request_timeout: Duration,
    /// Server-side request batching (TF Serving's `--enable_batching`); `None`: off.
    pub batching: Option<Batching>,
    /// How FTRL models are held in memory while served (default: mapped from a private copy
    /// made beside the version).
    pub model_mapping: ModelMapping,
    /// Online feedback (prediction ids, labels joined back, live metrics, canary verdicts);
    /// effective only with the admin API, which takes the labels. `None`: off.
    pub feedback: Option<feedback::FeedbackOptions>,
}

/// Where a served FTRL model keeps the private copy of its file that it is mapped from
/// ([`evergreen_model::open`]): mapped, a model costs no anonymous memory, only the pages
/// requests touch are resident, and a hot swap does not hold two decoded models. Other kinds
/// are always read into memory. Where no unnamed file can be made there (a read-only
/// directory, a filesystem without `O_TMPFILE`), the model is read into memory and the log
/// says why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ModelMapping {
    /// Read every model into memory.
    Off,
    /// The copy is made in the version's own directory (an unnamed file: it never appears
    /// there).
    #[default]
    BesideVersion,
    /// The copy is made in this directory.
    In(PathBuf),
}

/// Server-side request batching settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batching {
    /// The parameters (TF Serving's `--batching_parameters_file`).
    pub params: BatchingParameters,
    /// TF Serving's `--enable_per_model_batching_parameters`: a version batches only when its
    /// directory has [`BATCHING_PARAMS_FILE`], with the parameters in it (a file that does not
    /// parse keeps the version from being served); `params` then only sets the thread count
    /// when the file does not.
    pub per_model: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            models: Vec::new(),
            poll_interval: Duration::from_millis(200),
            max_body_bytes: 4 << 20,
            num_versions: 1,
            admin: None,
            request_timeout: Duration::from_secs(30),
            batching: None,
            model_mapping: ModelMapping::default(),
            feedback: None,
        }
    }
}

pub(crate) struct Inner {
    pub(crate) opts: ServeOptions,
    /// Models by name; replaced as a whole when the model config changes
    /// ([`Server::reconfigure`]), read without locks.
    pub(crate) models: arc_swap::ArcSwap<BTreeMap<String, Arc<ModelState>>>,
    pub(crate) metrics: Arc<Metrics>,
    /// The feedback store, when feedback is on (it needs the admin API).
    pub(crate) feedback: Option<feedback::Feedback>,
}

/// The model server. Cheap to clone: every clone shares the same models and metrics.
#[derive(Clone)]
pub struct Server {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field(
                "models",
                &self.inner.models.load().keys().collect::<Vec<_>>(),
            )
            .field("opts", &self.inner.opts)
            .finish()
    }
}

impl Server {
    /// Creates the server and does one synchronous reload pass, so that versions already on
    /// disk are served from the first request. Does blocking file IO (call it at startup, or
    /// from `spawn_blocking`). A model name listed twice is served once (first entry wins).
    pub fn new(opts: ServeOptions, metrics: Arc<Metrics>) -> Self {
        let models = Self::states(&opts, &opts.models, &BTreeMap::new());
        let feedback = match (&opts.feedback, &opts.admin) {
            (Some(f), Some(_)) => Some(feedback::Feedback::new(f.clone())),
            (Some(_), None) => {
                tracing::warn!("feedback needs the admin API (its labels come through it): off");
                None
            }
            _ => None,
        };
        let server = Self {
            inner: Arc::new(Inner {
                opts,
                models: arc_swap::ArcSwap::from_pointee(models),
                metrics,
                feedback,
            }),
        };
        server.reload_now();
        server
    }

    /// The model states for `sources`, reusing those of `current` that serve the same base
    /// path, version policy and labels.
    fn states(
        opts: &ServeOptions,
        sources: &[ModelSource],
        current: &BTreeMap<String, Arc<ModelState>>,
    ) -> BTreeMap<String, Arc<ModelState>> {
        let mut models = BTreeMap::new();
        for source in sources {
            if models.contains_key(&source.name) {
                tracing::warn!(model = %source.name, "model listed twice; the first entry is served");
                continue;
            }
            let policy = source
                .policy
                .clone()
                .unwrap_or(VersionPolicy::Latest(opts.num_versions.max(1)));
            let state = match current.get(&source.name) {
                Some(s) if s.serves(&source.base_path, &policy, &source.labels) => s.clone(),
                _ => Arc::new(ModelState::new(
                    source.name.clone(),
                    source.base_path.clone(),
                    policy,
                    source.labels.clone(),
                    opts.batching.clone(),
                    opts.model_mapping.clone(),
                )),
            };
            models.insert(source.name.clone(), state);
        }
        models
    }

    /// Serves `sources` from now on (TF Serving's model config file read again): models no
    /// longer listed stop being served, new ones are loaded before this returns, and a model
    /// whose base path, version policy and labels are unchanged keeps its loaded versions
    /// (the others start again from their directories). Does blocking file IO. Returns the
    /// names added, removed and changed.
    pub fn reconfigure(&self, sources: &[ModelSource]) -> Reconfigured {
        let current = self.inner.models.load_full();
        let next = Self::states(&self.inner.opts, sources, &current);
        // New and changed states load before they are published, so that a model that stays
        // listed does not answer 404/503 in between.
        for (name, state) in &next {
            if !current.get(name).is_some_and(|c| Arc::ptr_eq(c, state)) {
                state.reload(&self.inner.metrics);
            }
        }
        let mut out = Reconfigured::default();
        for (name, state) in &next {
            match current.get(name) {
                None => out.added.push(name.clone()),
                Some(c) if !Arc::ptr_eq(c, state) => out.changed.push(name.clone()),
                Some(_) => {}
            }
        }
        out.removed = current
            .keys()
            .filter(|n| !next.contains_key(*n))
            .cloned()
            .collect();
        self.inner.models.store(Arc::new(next));
        out
    }

    /// One synchronous pass over every model's registry: loads new versions, drops versions no
    /// longer wanted, updates labels and the `serving_version` gauge. Does blocking file IO.
    pub fn reload_now(&self) {
        for model in self.inner.models.load().values() {
            model.reload(&self.inner.metrics);
        }
    }

    /// The HTTP routes (see `docs/rest-api.md`). The watcher is not part of the router: use
    /// [`Server::run`], or call [`Server::reload_now`] yourself.
    pub fn router(&self) -> axum::Router {
        api::router(self.clone())
    }

    /// Serves on `listener` until `shutdown` completes, with the watcher polling every
    /// `poll_interval`; then stops accepting, lets in-flight requests finish and stops the
    /// watcher.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.run_with_grpc(listener, None, shutdown).await
    }

    /// [`Server::run`], plus TensorFlow Serving's gRPC services on `grpc` when given (both stop
    /// together, draining in-flight requests). Connections are set to `TCP_NODELAY`: a reply
    /// written in several frames must not wait for the client's delayed ACK (Nagle's algorithm
    /// held 64-instance gRPC replies for 40 ms).
    pub async fn run_with_grpc(
        self,
        listener: tokio::net::TcpListener,
        grpc: Option<tokio::net::TcpListener>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let watcher = tokio::spawn(self.clone().watch(stop_rx));
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, models = ?self.inner.models.load().keys().collect::<Vec<_>>(), "serving");
        }
        let (down_tx, down_rx) = tokio::sync::watch::channel(false);
        let signal = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|down| *down).await;
        };
        let grpc_task = grpc.map(|l| {
            if let Ok(addr) = l.local_addr() {
                tracing::info!(%addr, "serving gRPC");
            }
            let (prediction, model) = grpc::services(self.clone());
            let rx = down_rx.clone();
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(prediction)
                    .add_service(model)
                    .serve_with_incoming_shutdown(
                        tokio_stream::StreamExt::map(
                            tokio_stream::wrappers::TcpListenerStream::new(l),
                            no_delay,
                        ),
                        signal(rx),
                    ),
            )
        });
        tokio::spawn(async move {
            shutdown.await;
            let _ = down_tx.send(true);
        });
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let result = axum::serve(listener, self.router())
            .with_graceful_shutdown(signal(down_rx))
            .await;
        if let Some(t) = grpc_task {
            match t.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "gRPC server ended with an error"),
                Err(e) => tracing::warn!(error = %e, "gRPC server task failed"),
            }
        }
        let _ = stop_tx.send(());
        if let Err(e) = watcher.await {
            tracing::warn!(error = %e, "version watcher ended abnormally");
        }
        result
    }

    async fn watch(self, mut stop: tokio::sync::oneshot::Receiver<()>) {
        let period = self.inner.opts.poll_interval.max(Duration::from_millis(1));
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = interval.tick() => {
                    let server = self.clone();
                    if let Err(e) = tokio::task::spawn_blocking(move || server.reload_now()).await {
                        tracing::warn!(error = %e, "reload pass failed");
                    }
                }
            }
        }
    }
}

/// What [`Server::reconfigure`] changed: model names, each list in name order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconfigured {
    /// Models served from now on that were not before.
    pub added: Vec<String>,
    /// Models no longer served.
    pub removed: Vec<String>,
    /// Models whose base path, version policy or labels changed.
    pub changed: Vec<String>,
}

impl Reconfigured {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// A server running on a tokio task, as returned by [`spawn`].
///
/// Dropping the handle without calling [`ServerHandle::shutdown`] also starts a graceful
/// shutdown (the shutdown channel closes), but does not wait for it.
#[derive(Debug)]
pub struct ServerHandle {
    /// The bound address (the real port when port 0 was asked for).
    pub addr: SocketAddr,
    /// The bound gRPC address, when gRPC was asked for.
    pub grpc_addr: Option<SocketAddr>,
    server: Server,
    shutdown: tokio::sync::oneshot::Sender<()>,
    join: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl ServerHandle {
    /// The running server (e.g. to call [`Server::reload_now`]).
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Stops accepting connections, waits for in-flight requests and the watcher to finish.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(());
        match self.join.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "server ended with an error"),
            Err(e) => tracing::warn!(error = %e, "server task failed"),
        }
    }
}

/// Binds `addr` (port 0 picks a free port), creates the [`Server`] (initial load off the async
/// threads) and runs it on a tokio task.
pub async fn spawn(
    opts: ServeOptions,
    metrics: Arc<Metrics>,
    addr: SocketAddr,
) -> std::io::Result<ServerHandle> {
    spawn_with_grpc(opts, metrics, addr, None).await
}

/// [`spawn`], plus TensorFlow Serving's gRPC API on `grpc_addr` when given.
pub async fn spawn_with_grpc(
    opts: ServeOptions,
    metrics: Arc<Metrics>,
    addr: SocketAddr,
    grpc_addr: Option<SocketAddr>,
) -> std::io::Result<ServerHandle> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let grpc = match grpc_addr {
        Some(a) => Some(tokio::net::TcpListener::bind(a).await?),
        None => None,
    };
    let grpc_addr = grpc.as_ref().map(|l| l.local_addr()).transpose()?;
    let server = tokio::task::spawn_blocking(move || Server::new(opts, metrics))
        .await
        .map_err(std::io::Error::other)?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let join = tokio::spawn(server.clone().run_with_grpc(listener, grpc, async move {
        let _ = rx.await;
    }));
    Ok(ServerHandle {
        addr,
        grpc_addr,
        server,
        shutdown: tx,
        join,
    })
}

/// An accepted connection set to `TCP_NODELAY` (see [`Server::run_with_grpc`]).
fn no_delay(
    conn: std::io::Result<tokio::net::TcpStream>,
) -> std::io::Result<tokio::net::TcpStream> {
    conn.inspect(|tcp| {
        let _ = tcp.set_nodelay(true);
    })
}
