//! Server-side request batching (TF Serving's `--enable_batching`): the instances of requests
//! that arrive close together are scored as one batch (`Model::predict_batch`, matrix products
//! for the deep model instead of one matrix-vector product per instance).
//!
//! One [`Batcher`] per served version that batches: requests queue their transformed instances;
//! each of `num_batch_threads` threads takes the oldest request, waits up to
//! `batch_timeout_micros` for more while the batch has room (`max_batch_size` instances), scores
//! the batch and hands each request its predictions. A request larger than `max_batch_size`
//! runs as a batch of its own. At most `max_enqueued_batches · max_batch_size` instances wait;
//! beyond that a request is refused at once (unavailable, as TF Serving's "queue is full").
//! The parameters are TF Serving's text-format `BatchingParameters`, from
//! `--batching_parameters_file` or, per model, a version's `batching_params.pbtxt`.

use crate::error::ApiError;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, unbounded};
use evergreen_core::FeatureVector;
use evergreen_metrics::Metrics;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// File in a version directory with that model's batching parameters, read when per-model
/// batching parameters are enabled (TF Serving's name, in the SavedModel directory).
pub const BATCHING_PARAMS_FILE: &str = "batching_params.pbtxt";

/// TF Serving's `BatchingParameters`, the fields evergreen uses. Defaults are TF Serving's
/// batch scheduler's: batches of up to 1000 instances, no waiting, 10 batches queued, one
/// thread per core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchingParameters {
    /// Largest batch formed from queued requests, in instances.
    pub max_batch_size: usize,
    /// How long the oldest queued request waits for others to join its batch.
    pub batch_timeout: Duration,
    /// Batches' worth of instances that may wait; beyond, requests are refused.
    pub max_enqueued_batches: usize,
    /// Threads scoring batches (per batching version).
    pub num_batch_threads: usize,
}

impl Default for BatchingParameters {
    fn default() -> Self {
        Self {
            max_batch_size: 1000,
            batch_timeout: Duration::ZERO,
            max_enqueued_batches: 10,
            num_batch_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// Parses TF Serving's text-format `BatchingParameters` (unset fields keep their defaults).
/// Errors name the problem: syntax (with line and column), an unknown field, or a value out of
/// range.
pub fn parse_batching_parameters(text: &str) -> Result<BatchingParameters, String> {
    use crate::grpc::pb::tensorflow::serving as tfs;
    use prost_reflect::{DescriptorPool, DynamicMessage};
    let pool =
        DescriptorPool::decode(crate::model_config::DESCRIPTORS).map_err(|e| e.to_string())?;
    let desc = pool
        .get_message_by_name("tensorflow.serving.BatchingParameters")
        .ok_or("BatchingParameters descriptor missing")?;
    let msg = DynamicMessage::parse_text_format(desc, text).map_err(|e| e.to_string())?;
    let p: tfs::BatchingParameters = msg.transcode_to().map_err(|e| e.to_string())?;
    let mut out = BatchingParameters::default();
    let positive = |name: &str, v: i64, max: i64| {
        if (1..=max).contains(&v) {
            Ok(v as usize)
        } else {
            Err(format!("{name} must be in 1..={max}, not {v}"))
        }
    };
    if let Some(v) = p.max_batch_size {
        out.max_batch_size = positive("max_batch_size", v, 1 << 20)?;
    }
    if let Some(v) = p.batch_timeout_micros {
        if !(0..=60_000_000).contains(&v) {
            return Err(format!(
                "batch_timeout_micros must be in 0..=60000000, not {v}"
            ));
        }
        out.batch_timeout = Duration::from_micros(v as u64);
    }
    if let Some(v) = p.max_enqueued_batches {
        out.max_enqueued_batches = positive("max_enqueued_batches", v, 1 << 20)?;
    }
    if let Some(v) = p.num_batch_threads {
        out.num_batch_threads = positive("num_batch_threads", v, 256)?;
    }
    Ok(out)
}

/// How a batcher scores a batch.
type Score = dyn Fn(&[FeatureVector], &mut Vec<f64>) + Send + Sync;

/// One request's instances and where its predictions go.
struct Job {
    xs: Vec<FeatureVector>,
    reply: tokio::sync::oneshot::Sender<Vec<f64>>,
}

/// The predictions of a queued request, once its batch has run: `.await` them (REST), or
/// [`Pending::wait`] on a blocking thread (gRPC).
pub(crate) struct Pending(tokio::sync::oneshot::Receiver<Vec<f64>>);

fn stopped() -> ApiError {
    ApiError::Unavailable("the batch threads stopped".into())
}

impl Pending {
    /// Blocks until the batch ran (not from async code).
    pub(crate) fn wait(self) -> Result<Vec<f64>, ApiError> {
        self.0.blocking_recv().map_err(|_| stopped())
    }
}

impl std::future::IntoFuture for Pending {
    type Output = Result<Vec<f64>, ApiError>;
    type IntoFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Self::Output> + Send>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { self.0.await.map_err(|_| stopped()) })
    }
}

/// The batching queue of one served version, with its threads (they stop once the batcher is
/// dropped and the queue is empty).
pub(crate) struct Batcher {
    tx: Sender<Job>,
    /// Instances queued and not yet taken into a batch.
    queued: Arc<AtomicUsize>,
    capacity: usize,
    max_batch_size: usize,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("queued", &self.queued.load(Ordering::Relaxed))
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Batcher {
    /// Starts the batch threads of a served version, each batch scored by `score` (the
    /// version's `predict_batch`); `model` labels the batch-size metric.
    pub(crate) fn start(
        score: impl Fn(&[FeatureVector], &mut Vec<f64>) + Send + Sync + 'static,
        params: &BatchingParameters,
        model: &str,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (tx, rx) = unbounded::<Job>();
        let queued = Arc::new(AtomicUsize::new(0));
        let score: Arc<Score> = Arc::new(score);
        for i in 0..params.num_batch_threads.max(1) {
            let (rx, score, queued, metrics) =
                (rx.clone(), score.clone(), queued.clone(), metrics.clone());
            let (max, timeout, name) = (
                params.max_batch_size.max(1),
                params.batch_timeout,
                model.to_string(),
            );
            let spawned = std::thread::Builder::new()
                .name(format!("evergreen-batch-{i}"))
                .spawn(move || run_batches(&rx, &*score, max, timeout, &queued, &name, &metrics));
            if let Err(e) = spawned {
                tracing::warn!(%model, error = %e, "cannot start a batch thread");
            }
        }
        Self {
            tx,
            queued,
            capacity: params
                .max_enqueued_batches
                .max(1)
                .saturating_mul(params.max_batch_size.max(1)),
            max_batch_size: params.max_batch_size.max(1),
        }
    }

    /// Queues `xs` to be scored in a batch with other requests' instances; refused at once
    /// when the queue is full.
    pub(crate) fn submit(&self, xs: Vec<FeatureVector>) -> Result<Pending, ApiError> {
        let n = xs.len();
        // A request larger than a batch is admitted into an empty queue only.
        let admitted = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q == 0 || q + n <= self.capacity).then_some(q + n)
            });
        if admitted.is_err() {
            return Err(ApiError::Unavailable(format!(
                "The batch scheduling queue to which this task was submitted is full \
                 ({} instances queued at most: max_enqueued_batches x max_batch_size {})",
                self.capacity, self.max_batch_size
            )));
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        if self.tx.send(Job { xs, reply }).is_err() {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            return Err(stopped());
        }
        Ok(Pending(answer))
    }

    /// Instances queued and not yet taken into a batch.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

/// A batch thread: forms batches from the queue until the batcher is dropped.
fn run_batches(
    rx: &Receiver<Job>,
    score: &Score,
    max: usize,
    timeout: Duration,
    queued: &AtomicUsize,
    model: &str,
    metrics: &Metrics,
) {
    let mut carried: Option<Job> = None;
    let mut xs: Vec<FeatureVector> = Vec::new();
    let mut out: Vec<f64> = Vec::new();
    loop {
        let first = match carried.take() {
            Some(j) => j,
            None => match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            },
        };
        let deadline = Instant::now() + timeout;
        let mut size = first.xs.len();
        let mut jobs = vec![first];
        while size < max {
            let next = if timeout.is_zero() {
                rx.try_recv().map_err(|e| matches!(e, TryRecvError::Empty))
            } else {
                rx.recv_deadline(deadline)
                    .map_err(|e| matches!(e, RecvTimeoutError::Timeout))
            };
            match next {
                Ok(j) if size + j.xs.len() > max => {
                    carried = Some(j);
                    break;
                }
                Ok(j) => {
                    size += j.xs.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        queued.fetch_sub(size, Ordering::AcqRel);
        xs.clear();
        let mut lens = Vec::with_capacity(jobs.len());
        let mut replies = Vec::with_capacity(jobs.len());
        for j in jobs {
            lens.push(j.xs.len());
            xs.extend(j.xs);
            replies.push(j.reply);
        }
        out.clear();
        score(&xs, &mut out);
        metrics
            .batch_size
            .get_or_create(&Metrics::model(model))
            .observe(size as f64);
        let mut at = 0;
        for (len, reply) in lens.into_iter().zip(replies) {
            // A requester that gave up (timeout) is simply not answered.
            let _ = reply.send(out[at..at + len].to_vec());
            at += len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A gated batcher, its gate, the sizes of its batches, its metrics.
    type Gated = (
        Arc<Batcher>,
        Sender<()>,
        Arc<Mutex<Vec<usize>>>,
        Arc<Metrics>,
    );

    /// A batcher whose scores are each instance's first index, recording each batch's size;
    /// its first batch waits for `gate` (so that requests queue up behind it).
    fn gated(params: &BatchingParameters) -> Gated {
        let (open, gate) = crossbeam_channel::bounded::<()>(1);
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let metrics = Arc::new(Metrics::new());
        let score = move |xs: &[FeatureVector], out: &mut Vec<f64>| {
            let first = {
                let mut s = seen.lock().unwrap();
                s.push(xs.len());
                s.len() == 1
            };
            if first {
                gate.recv().unwrap();
            }
            out.extend(xs.iter().map(|x| f64::from(x.indices[0])));
        };
        let b = Arc::new(Batcher::start(score, params, "m", metrics.clone()));
        (b, open, sizes, metrics)
    }

    fn predict(b: &Batcher, xs: Vec<FeatureVector>) -> Result<Vec<f64>, ApiError> {
        b.submit(xs)?.wait()
    }

    fn request(ids: std::ops::Range<u32>) -> Vec<FeatureVector> {
        ids.map(|i| {
            let mut x = FeatureVector::default();
            x.push(i, 1.0);
            x
        })
        .collect()
    }

    /// Waits (bounded) until `b` has `n` instances queued.
    fn until_queued(b: &Batcher, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while b.queued() != n {
            assert!(Instant::now() < deadline, "queued {} != {n}", b.queued());
            std::thread::yield_now();
        }
    }

    #[test]
    fn queued_requests_share_batches_and_each_gets_its_own_predictions() {
        let params = BatchingParameters {
            max_batch_size: 4,
            batch_timeout: Duration::ZERO,
            max_enqueued_batches: 10,
            num_batch_threads: 1,
        };
        let (b, open, sizes, metrics) = gated(&params);
        let submit = |ids: std::ops::Range<u32>| {
            let b = b.clone();
            std::thread::spawn(move || (ids.clone(), predict(&b, request(ids))))
        };
        let a = submit(0..1);
        until_queued(&b, 0); // a's batch is being scored (held at the gate)
        while sizes.lock().unwrap().is_empty() {
            std::thread::yield_now();
        }
        let r2 = submit(10..12);
        until_queued(&b, 2);
        let r3 = submit(20..21);
        until_queued(&b, 3);
        let r4 = submit(30..32);
        until_queued(&b, 5);
        open.send(()).unwrap();
        for h in [a, r2, r3, r4] {
            let (ids, got) = h.join().unwrap();
            let want: Vec<f64> = ids.map(f64::from).collect();
            assert_eq!(got.unwrap(), want);
        }
        // The first alone; then 2 + 1 (the next, of 2, would pass 4) ; then 2.
        assert_eq!(*sizes.lock().unwrap(), vec![1, 3, 2]);
        let text = metrics.render();
        assert!(
            text.contains("evergreen_serving_batch_size_count{model=\"m\"} 3"),
            "{text}"
        );
    }

    #[test]
    fn a_full_queue_refuses_at_once_and_a_large_request_runs_alone() {
        let params = BatchingParameters {
            max_batch_size: 4,
            batch_timeout: Duration::from_secs(3600),
            max_enqueued_batches: 1,
            num_batch_threads: 1,
        };
        let (b, open, sizes, _) = gated(&params);
        // Larger than a batch, into an empty queue: admitted, scored as a batch of its own
        // (held at the gate).
        let big = {
            let b = b.clone();
            std::thread::spawn(move || predict(&b, request(0..6)))
        };
        while sizes.lock().unwrap().is_empty() {
            std::thread::yield_now();
        }
        let three = {
            let b = b.clone();
            std::thread::spawn(move || predict(&b, request(10..13)))
        };
        until_queued(&b, 3);
        // 3 + 2 > 1 batch of 4: refused without waiting.
        match predict(&b, request(20..22)) {
            Err(ApiError::Unavailable(m)) => assert!(m.contains("queue"), "{m}"),
            other => panic!("{other:?}"),
        }
        // 3 + 1 fits, and fills the batch: it runs without waiting for the timeout.
        let one = {
            let b = b.clone();
            std::thread::spawn(move || predict(&b, request(30..31)))
        };
        until_queued(&b, 4);
        open.send(()).unwrap();
        assert_eq!(
            big.join().unwrap().unwrap(),
            (0..6).map(f64::from).collect::<Vec<_>>()
        );
        assert_eq!(three.join().unwrap().unwrap(), vec![10.0, 11.0, 12.0]);
        assert_eq!(one.join().unwrap().unwrap(), vec![30.0]);
        assert_eq!(*sizes.lock().unwrap(), vec![6, 4]);
    }

    #[test]
    fn parses_tf_servings_documented_parameters() {
        // The example of TF Serving's batching guide.
        let p = parse_batching_parameters(
            "max_batch_size { value: 128 }\n\
             batch_timeout_micros { value: 0 }\n\
             max_enqueued_batches { value: 1000000 }\n\
             num_batch_threads { value: 8 }\n",
        )
        .unwrap();
        assert_eq!(
            p,
            BatchingParameters {
                max_batch_size: 128,
                batch_timeout: Duration::ZERO,
                max_enqueued_batches: 1_000_000,
                num_batch_threads: 8,
            }
        );
        // Unset fields keep the defaults; fields without use here are accepted.
        let p = parse_batching_parameters(
            "# a comment\nbatch_timeout_micros { value: 2000 }\npad_variable_length_inputs: true\n\
             allowed_batch_sizes: 8\nallowed_batch_sizes: 16\nthread_pool_name { value: \"x\" }",
        )
        .unwrap();
        assert_eq!(p.batch_timeout, Duration::from_millis(2));
        assert_eq!(
            p.max_batch_size,
            BatchingParameters::default().max_batch_size
        );
        let bad = |t: &str| parse_batching_parameters(t).unwrap_err();
        assert!(bad("max_batch_sise { value: 1 }").contains("max_batch_sise"));
        assert!(bad("max_batch_size { value: 0 }").contains("max_batch_size"));
        assert!(bad("num_batch_threads { value: -1 }").contains("num_batch_threads"));
        assert!(bad("batch_timeout_micros { value: -5 }").contains("batch_timeout_micros"));
        let eof = bad("max_batch_size { value: 1");
        assert!(eof.contains("end of"), "{eof}");
    }
}
